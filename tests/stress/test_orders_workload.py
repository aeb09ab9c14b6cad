"""The order-flow workloads (`orders`, `orderbook-sol`, precompiles/stress.py).

Live: `blixt stress -w orders` and `-w orderbook-sol` against a fresh
`blixt devnet --instant` (its own node, so the exchange's book starts empty). With
one connection and one request in flight, transactions execute in plan order, so the
book each run leaves is exactly what `reference_book` (a few lines of price-time
matching) computes from the same flow; the test compares them level by level.
Offline: the ABI encoder's defaults, the flow's shape, the precompile probe.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter, deque

import pytest
from eth_abi import decode as abi_decode

from node.stress import main
from node.stress.keys import derived_senders
from node.stress.rpc import RpcError
from node.stress.workloads import WORKLOADS, WorkloadUnavailable, load_plugins
from precompiles import stress
from precompiles.stress import (BUY, CANCEL, CROSS, EXCHANGE_ADDRESS, REST, SELL, AbiFunction, MarketMakingFlow,
                                load_abi, probe_exchange)
from tests.conftest import Devnet, rpc

SENDERS, COUNT = 5, 100  # two full cycles of ten per sender


@pytest.fixture(scope="module")
def node():
    devnet = Devnet("--instant")
    try:
        yield devnet
    finally:
        devnet.stop()


def _stress(tmp_path, url: str, *args: str) -> dict:
    out = tmp_path / "summary.json"
    code = main(["--rpc", url, "--quiet", "--drain", "20", "--connections", "1", "--json", str(out), *args])
    assert code == 0
    return json.loads(out.read_text())


def _call(url: str, to: str, data: bytes, types: list[str]) -> tuple:
    answer = rpc(url, "eth_call", [{"to": to, "data": "0x" + data.hex()}, "latest"])
    assert "result" in answer, answer
    return abi_decode(types, bytes.fromhex(answer["result"][2:]))


def reference_book(count: int, senders: int, self_trade_cancels_incoming: bool):
    """The resting book (price → [(sender, quantity)] in time order, per side) and the
    number of fills after `count` flow transactions executed in plan order."""
    flow = MarketMakingFlow()
    book = {BUY: {}, SELL: {}}
    by_client_id = {}
    fills = 0
    for j in range(count):
        sender, sequence = j % senders, j // senders
        a = flow.action(sender, sequence, 0)
        if a.kind == CANCEL:
            side, price, entry = by_client_id.pop((sender, a.client_order_id))
            book[side][price].remove(entry)
            continue
        remaining = a.quantity
        opposite = book[1 - a.side]
        while remaining:
            prices = [p for p, q in opposite.items() if q and (p <= a.price if a.side == BUY else p >= a.price)]
            if not prices:
                break
            queue = opposite[min(prices) if a.side == BUY else max(prices)]
            maker = queue[0]
            if maker[0] == sender and self_trade_cancels_incoming:
                remaining = 0
                break
            fill = min(remaining, maker[1])
            fills += 1
            remaining -= fill
            maker[1] -= fill
            if not maker[1]:
                queue.popleft()
        if remaining and a.kind == REST:
            entry = [sender, remaining]
            book[a.side].setdefault(a.price, deque()).append(entry)
            if a.client_order_id:
                by_client_id[(sender, a.client_order_id)] = (a.side, a.price, entry)
    levels = {side: sorted(((p, sum(e[1] for e in q)) for p, q in book[side].items() if q), reverse=side == BUY)
              for side in (BUY, SELL)}
    per_sender = Counter(e[0] for side in book.values() for q in side.values() for e in q)
    return levels, per_sender, fills


def test_orders_workload_fills_the_exchange_book_as_the_flow_says(node, tmp_path):
    summary = _stress(tmp_path, node.url, "-w", "orders", "-n", str(COUNT), "-a", str(SENDERS), "--seed", "orders-live")
    tx = summary["transactions"]
    assert (tx["sent"], tx["accepted"], tx["included"], tx["errors"]) == (COUNT, COUNT, COUNT, 0)
    outcomes = summary["receipt_outcomes"]
    assert outcomes == {"of": "orders", "included": COUNT, "checked": COUNT, "succeeded": COUNT, "reverted": 0,
                        "missing": 0, "complete": True}

    levels, per_sender, fills = reference_book(COUNT, SENDERS, self_trade_cancels_incoming=True)
    exchange = "0x" + EXCHANGE_ADDRESS.hex()
    f = load_abi(stress.ABI_PATH)
    bid_prices, bid_quantities, ask_prices, ask_quantities = _call(
        node.url, exchange, f["depth"].encode(market=0, levels=100), ["uint256[]"] * 4)
    assert list(zip(bid_prices, bid_quantities)) == levels[BUY]
    assert list(zip(ask_prices, ask_quantities)) == levels[SELL]
    assert _call(node.url, exchange, f["bestBidAsk"].encode(market=0), ["uint256", "uint256"]) == (
        levels[BUY][0][0], levels[SELL][0][0])
    # Every deep order was cancelled: each sender's open orders are its near ones the
    # crossing orders did not take.
    for i, sender in enumerate(derived_senders(SENDERS, "orders-live")):
        (ids,) = _call(node.url, exchange, f["openOrders"].encode(account=sender.address), ["uint256[]"])
        assert len(ids) == per_sender[i]
    (fill,) = [e for e in json.loads(stress.ABI_PATH.read_text()) if e["type"] == "event" and e["name"] == "Fill"]
    fill_topic = "0x" + stress.keccak(f"Fill({','.join(i['type'] for i in fill['inputs'])})".encode()).hex()
    logs = rpc(node.url, "eth_getLogs", [{"address": exchange, "fromBlock": "0x0", "toBlock": "latest",
                                          "topics": [fill_topic]}])["result"]
    assert fills > 0 and len(logs) == fills


def test_orderbook_sol_workload_runs_the_same_flow_on_the_evm_path(node, tmp_path):
    count, senders = 60, 3
    summary = _stress(tmp_path, node.url, "-w", "orderbook-sol", "-n", str(count), "-a", str(senders), "--seed", "sol-live")
    assert summary["transactions"]["included"] == count
    assert summary["receipt_outcomes"]["succeeded"] == count and summary["receipt_outcomes"]["reverted"] == 0
    contract = summary["setup"]["orderbook_sol"]["contract"]
    levels, _, _ = reference_book(count, senders, self_trade_cancels_incoming=False)
    depth = bytes.fromhex(stress.SolidityOrderBook()._selectors["depth"].hex())
    for side in (BUY, SELL):
        prices, quantities = _call(node.url, contract, depth + side.to_bytes(32, "big") + (100).to_bytes(32, "big"),
                                   ["uint256[]", "uint256[]"])
        assert list(zip(prices, quantities)) == levels[side]


def test_orders_is_the_real_workload_and_names_the_same_address_as_the_precompile():
    from precompiles.exchange import EXCHANGE_ADDRESS as PRECOMPILE

    load_plugins()
    assert WORKLOADS["orders"] is stress.ExchangeOrders
    assert WORKLOADS["orderbook-sol"] is stress.SolidityOrderBook
    assert EXCHANGE_ADDRESS == PRECOMPILE


def test_place_order_calldata_fills_options_it_does_not_name_with_zero():
    entry = {"type": "function", "name": "placeOrder", "inputs": [
        {"name": "market", "type": "uint256"}, {"name": "side", "type": "uint8"},
        {"name": "newOption", "type": "bool"}, {"name": "offset", "type": "int256"}]}
    f = AbiFunction(entry)
    assert f.selector == stress.keccak(b"placeOrder(uint256,uint8,bool,int256)")[:4]
    data = f.encode(market=2, side=1, offset=-1)
    assert data[4:] == (2).to_bytes(32, "big") + (1).to_bytes(32, "big") + bytes(32) + b"\xff" * 32
    with pytest.raises(ValueError, match="no input named"):
        f.encode(markt=2)
    # The published ABI's placeOrder encodes with every option this module leaves out at zero.
    published = load_abi(stress.ABI_PATH)["placeOrder"]
    assert len(published.encode(market=0, side=0, price=10, quantity=10**15)) == 4 + 32 * len(published.inputs)


def test_flow_mix_and_that_cancels_only_target_orders_nothing_can_fill():
    flow = MarketMakingFlow()
    actions = [flow.action(3, sequence, 40) for sequence in range(100)]
    assert Counter(a.kind for a in actions) == {REST: 60, CROSS: 20, CANCEL: 20}
    rests = {a.client_order_id: a for a in actions if a.kind == REST and a.client_order_id}
    reach = max(abs(a.price - flow.mid) for a in actions if a.kind == CROSS)
    for a in actions:
        if a.kind == CANCEL:
            target = rests[a.client_order_id]  # an earlier order of the same sender
            assert abs(target.price - flow.mid) > reach
        elif a.kind != CANCEL:
            assert a.price % flow.tick == 0 and a.quantity % flow.lot == 0
    # Client ids are nonce + 1: the deep bid of step 2 sent at nonce 40 + 2.
    assert actions[2].client_order_id == 43 and actions[8].client_order_id == 43
    weth, usdc = flow.needs(3, 100)
    assert weth == sum(a.quantity for a in actions if a.kind != CANCEL and a.side == SELL)
    assert usdc > sum(a.price * a.quantity // flow.lot for a in actions if a.kind != CANCEL and a.side == BUY)


class _FakeRpc:
    def __init__(self, code: str, call_error: str | None = None):
        self.code, self.call_error = code, call_error

    async def call(self, method, params=None):
        if method == "eth_getCode":
            return self.code
        if self.call_error:
            raise RpcError({"code": -32000, "message": self.call_error}, method)
        return "0x" + "00" * 64


@pytest.mark.parametrize("fake, why", [
    (_FakeRpc("0x"), "eth_getCode"),
    (_FakeRpc("0xfe", call_error="execution reverted"), "bestBidAsk(0) failed: execution reverted"),
])
def test_a_node_without_the_precompile_is_refused_with_a_clear_message(fake, why):
    with pytest.raises(WorkloadUnavailable, match="needs Blixt's exchange precompile") as info:
        asyncio.run(probe_exchange(fake))
    assert why in str(info.value)
    asyncio.run(probe_exchange(_FakeRpc("0xfe")))  # the precompile answers: no error
