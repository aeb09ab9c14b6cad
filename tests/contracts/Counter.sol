// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// The integration tests' contract: storage, events, reverts with and without reasons.
contract Counter {
    uint256 public count;
    mapping(address => uint256) public deposits;

    event Incremented(address indexed by, uint256 newCount);
    event Deposited(address indexed from, uint256 amount);

    error TooLarge(uint256 value, uint256 limit);

    function increment() external {
        count += 1;
        emit Incremented(msg.sender, count);
    }

    function add(uint256 value) external {
        if (value > 1000) revert TooLarge(value, 1000);
        count += value;
        emit Incremented(msg.sender, count);
    }

    function failWithReason() external pure {
        revert("counter: nope");
    }

    function deposit() external payable {
        require(msg.value > 0, "counter: zero deposit");
        deposits[msg.sender] += msg.value;
        emit Deposited(msg.sender, msg.value);
    }

    function blockInfo() external view returns (uint256 number, uint256 timestamp, uint256 basefee) {
        return (block.number, block.timestamp, block.basefee);
    }
}
