// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

import "./IExchange.sol";

/// A contract that trades through the exchange precompile (its own account there),
/// and the ways a call into it can be undone or refused.
contract ExchangeUser {
    IExchange constant EX = IExchange(0x0000000000000000000000000000000000000800);

    function fund(uint256 asset, uint256 amount) external {
        EX.deposit(asset, amount);
    }

    function place(uint256 market, uint8 side, uint256 price, uint256 quantity) public returns (uint256 orderId) {
        (orderId,,,) = EX.placeLimit(market, side, price, quantity);
    }

    /// Places an order, then reverts: the engine must keep no trace of it.
    function placeThenRevert(uint256 market, uint8 side, uint256 price, uint256 quantity) external {
        place(market, side, price, quantity);
        revert("undo");
    }

    /// An inner call that places and reverts, inside an outer call that succeeds.
    function placeTwiceOneUndone(uint256 market, uint8 side, uint256 price, uint256 quantity)
        external returns (uint256 kept)
    {
        try this.placeThenRevert(market, side, price, quantity) {} catch {}
        kept = place(market, side, price + 10, quantity);
    }

    function delegatePlace(uint256 market, uint8 side, uint256 price, uint256 quantity) external returns (bool ok) {
        (ok,) = address(EX).delegatecall(
            abi.encodeCall(IExchange.placeLimit, (market, side, price, quantity)));
    }

    function staticPlace(uint256 market, uint8 side, uint256 price, uint256 quantity) external view returns (bool ok) {
        (ok,) = address(EX).staticcall(
            abi.encodeCall(IExchange.placeLimit, (market, side, price, quantity)));
    }

    function bestBid(uint256 market) external view returns (uint256 bid) {
        (bid,) = EX.bestBidAsk(market);
    }

    /// The revert data of a rejected order, for callers that want the reason.
    function tryPlace(uint256 market, uint8 side, uint256 price, uint256 quantity)
        external returns (bool ok, bytes memory reason)
    {
        try EX.placeLimit(market, side, price, quantity) {
            ok = true;
        } catch (bytes memory data) {
            reason = data;
        }
    }
}
