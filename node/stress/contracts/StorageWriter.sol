// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// The `call` stress workload's target: every call writes storage — the caller's
/// own slot (so senders do not contend on one slot) and a shared counter (so the
/// node also sees a hot slot, as an exchange contract would).
contract StorageWriter {
    uint256 public calls;
    mapping(address => uint256) public totalBy;

    function bump(uint256 amount) external {
        totalBy[msg.sender] += amount;
        calls += 1;
    }
}
