"""The exchange on the running devnet, through web3.py and the published ABI:
deposits, orders, fills as logs, views over eth_call, custom-error reverts, the
digest in the state root, metrics, and a kill -9 that loses no acknowledged order."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from eth_abi import decode
from web3 import Web3
from web3.exceptions import ContractCustomError
from web3.logs import DISCARD

from precompiles import solidity
from precompiles.exchange import DIGEST_SLOT, EXCHANGE_ADDRESS
from tests.conftest import wait_until

ABI = json.loads(Path(solidity.ABI_PATH).read_text())
WETH, USDC, ETH_USDC = 1, 0, 0
PRICE, LOT = 3_000_000, 10**15


def exchange_contract(w3: Web3):
    return w3.eth.contract(address=Web3.to_checksum_address(EXCHANGE_ADDRESS), abi=ABI)


def send(w3: Web3, call, sender: str, value: int = 0):
    tx = call.transact({"from": sender, "value": value, "gas": 500_000})
    return w3.eth.wait_for_transaction_receipt(tx, timeout=20)


def trade(w3: Web3):
    """Account 0 sells 1 WETH in two orders, account 1 buys 0.4 WETH."""
    ex = exchange_contract(w3)
    seller, buyer = w3.eth.accounts[0], w3.eth.accounts[1]
    assert send(w3, ex.functions.deposit(WETH, 10**18), seller, value=10**18).status == 1
    assert send(w3, ex.functions.deposit(USDC, 10**10), buyer).status == 1
    assert send(w3, ex.functions.placeLimit(ETH_USDC, 1, PRICE, 500 * LOT), seller).status == 1
    assert send(w3, ex.functions.placeLimit(ETH_USDC, 1, PRICE + 10, 500 * LOT), seller).status == 1
    receipt = send(w3, ex.functions.placeLimit(ETH_USDC, 0, PRICE, 400 * LOT), buyer)
    assert receipt.status == 1
    return ex, seller, buyer, receipt


def test_trading_through_transactions_and_reading_through_calls(devnet):
    w3 = Web3(Web3.HTTPProvider(devnet.url))
    ex, seller, buyer, receipt = trade(w3)
    fills = ex.events.Fill().process_receipt(receipt, errors=DISCARD)
    assert len(fills) == 1
    fill = fills[0].args
    assert (fill.makerAccount, fill.takerAccount) == (seller, buyer)
    assert (fill.price, fill.quantity) == (PRICE, 400 * LOT)
    # getLogs with a topic filter on the indexed maker finds the same trade once sealed.
    wait_until(lambda: w3.eth.block_number >= receipt.blockNumber, timeout=20)
    logs = ex.events.Fill().get_logs(from_block=0, argument_filters={"makerAccount": seller})
    assert [log.transactionHash for log in logs] == [receipt.transactionHash]
    assert ex.functions.balanceOf(buyer, WETH).call() == [400 * LOT, 0]
    assert ex.functions.bestBidAsk(ETH_USDC).call() == [0, PRICE]
    bid_prices, bid_qty, ask_prices, ask_qty = ex.functions.depth(ETH_USDC, 5).call()
    assert ask_prices == [PRICE, PRICE + 10] and ask_qty == [100 * LOT, 500 * LOT]
    assert len(ex.functions.openOrders(seller).call()) == 2


def test_a_rejected_order_is_a_custom_error_and_changes_nothing(devnet):
    w3 = Web3(Web3.HTTPProvider(devnet.url))
    ex = exchange_contract(w3)
    buyer = w3.eth.accounts[2]
    send(w3, ex.functions.deposit(USDC, 10**9), buyer)
    digest = ex.functions.stateDigest().call()
    with pytest.raises(ContractCustomError) as caught:
        ex.functions.placeLimit(ETH_USDC, 0, PRICE + 1, LOT).call({"from": buyer})
    data = bytes.fromhex(str(caught.value.data)[2:])
    code, reason = decode(["uint32", "string"], data[4:])
    assert code == 6 and reason.startswith("OFF_TICK")
    # Plain JSON-RPC users (cast call) read the reason in the error message too.
    call = {"from": buyer, "to": Web3.to_checksum_address(EXCHANGE_ADDRESS),
            "data": ex.encode_abi("placeLimit", [ETH_USDC, 0, PRICE + 1, LOT])}
    answer = w3.provider.make_request("eth_call", [call, "latest"])
    assert answer["error"]["code"] == 3
    assert answer["error"]["message"].startswith("execution reverted: ExchangeError 6: OFF_TICK")
    # Sent as a transaction it reverts (status 0) and the book is as it was.
    tx = ex.functions.placeLimit(ETH_USDC, 0, PRICE + 1, LOT).transact({"from": buyer, "gas": 200_000})
    assert w3.eth.wait_for_transaction_receipt(tx, timeout=20).status == 0
    assert ex.functions.stateDigest().call() == digest


def test_the_state_root_commits_to_the_exchange(devnet):
    w3 = Web3(Web3.HTTPProvider(devnet.url))
    ex, _, _, receipt = trade(w3)
    wait_until(lambda: w3.eth.get_block("latest").number > receipt.blockNumber, timeout=20)
    stored = w3.eth.get_storage_at(Web3.to_checksum_address(EXCHANGE_ADDRESS), DIGEST_SLOT)
    assert bytes(stored) == bytes(ex.functions.stateDigest().call())


def metrics(url: str) -> dict[str, float]:
    import urllib.request

    text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    return {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
            if line and not line.startswith("#")}


def test_exchange_metrics(devnet_factory):
    node = devnet_factory("--block-time", "0.2")
    w3 = Web3(Web3.HTTPProvider(node.url))
    ex, _, buyer, _ = trade(w3)
    # Simulations (eth_call, estimateGas) are not traffic.
    ex.functions.placeLimit(ETH_USDC, 0, PRICE, LOT).estimate_gas({"from": buyer})
    values = metrics(node.url)
    assert values["blixt_orders_total"] == 3
    assert values["blixt_exchange_fills_total"] == 1
    assert values['blixt_exchange_open_orders{market="ETH-USDC"}'] == 2
    assert values['blixt_exchange_command_seconds_count{kind="PlaceOrder"}'] == 3
    assert values['blixt_exchange_command_seconds_count{kind="Deposit"}'] == 2


@pytest.mark.parametrize("snapshot_every", [200_000, 3], ids=["replayed-commands", "snapshot"])
def test_kill_minus_nine_keeps_every_acknowledged_order(devnet_factory, tmp_path, snapshot_every):
    """The engine comes back from a snapshot plus the commands recorded per block
    after it, plus the write-ahead log of the unsealed block."""
    config = tmp_path / "blixt.toml"
    config.write_text(f"[storage]\nexchange_snapshot_commands = {snapshot_every}\n")
    data = str(tmp_path / "chain")
    node = devnet_factory("--block-time", "0.2", "--config", str(config), data_dir=data)
    w3 = Web3(Web3.HTTPProvider(node.url))
    ex, seller, buyer, receipt = trade(w3)
    # Some sealed blocks, and one more order that may still be in the open block.
    wait_until(lambda: w3.eth.block_number > receipt.blockNumber, timeout=20)
    assert send(w3, ex.functions.placeLimit(ETH_USDC, 0, PRICE - 10, 7 * LOT), buyer).status == 1
    before_orders = ex.functions.openOrders(seller).call() + ex.functions.openOrders(buyer).call()
    before_digest = ex.functions.stateDigest().call()
    node.kill()
    again = devnet_factory("--block-time", "0.2", "--config", str(config), data_dir=data)
    w3 = Web3(Web3.HTTPProvider(again.url))
    ex = exchange_contract(w3)
    assert ex.functions.openOrders(seller).call() + ex.functions.openOrders(buyer).call() == before_orders
    assert ex.functions.stateDigest().call() == before_digest
    # And it keeps trading from there, and survives a clean restart too.
    assert send(w3, ex.functions.placeLimit(ETH_USDC, 0, PRICE, 100 * LOT), buyer).status == 1
    assert ex.functions.bestBidAsk(ETH_USDC).call() == [PRICE - 10, PRICE + 10]
    digest = ex.functions.stateDigest().call()
    assert again.stop() == 0
    third = devnet_factory("--block-time", "0.2", "--config", str(config), data_dir=data)
    ex = exchange_contract(Web3(Web3.HTTPProvider(third.url)))
    assert ex.functions.stateDigest().call() == digest


def test_evm_snapshot_and_revert_restore_the_books(devnet_factory):
    node = devnet_factory("--block-time", "0.2")
    w3 = Web3(Web3.HTTPProvider(node.url))
    ex, seller, buyer, _ = trade(w3)
    digest = ex.functions.stateDigest().call()
    snapshot = w3.provider.make_request("evm_snapshot", [])["result"]
    assert send(w3, ex.functions.cancelAll(2**256 - 1), seller).status == 1
    assert ex.functions.openOrders(seller).call() == []
    assert w3.provider.make_request("evm_revert", [snapshot])["result"] is True
    assert ex.functions.stateDigest().call() == digest
    assert len(ex.functions.openOrders(seller).call()) == 2
    # Trading goes on from the restored book.
    assert send(w3, ex.functions.placeLimit(ETH_USDC, 0, PRICE, 100 * LOT), buyer).status == 1
    assert ex.functions.bestBidAsk(ETH_USDC).call() == [0, PRICE + 10]


def test_perpetuals_oracle_and_margin_on_chain(devnet_factory):
    node = devnet_factory("--block-time", "0.2")
    w3 = Web3(Web3.HTTPProvider(node.url))
    ex = exchange_contract(w3)
    long_, short, oracle = w3.eth.accounts[3], w3.eth.accounts[4], w3.eth.accounts[9]
    eth_perp = 2
    # Only the configured oracle (dev account 9) may set prices.
    assert send(w3, ex.functions.setOraclePrice(WETH, 3000 * 10**6), long_).status == 0
    assert send(w3, ex.functions.setOraclePrice(WETH, 3000 * 10**6), oracle).status == 1
    assert ex.functions.oraclePrice(WETH).call() == 3000 * 10**6
    for account in (long_, short):
        assert send(w3, ex.functions.deposit(USDC, 1_000 * 10**6), account).status == 1
    # 1 ETH of notional on 1,000 USDC: allowed; 10 ETH is not (portfolio margin).
    with pytest.raises(ContractCustomError) as caught:
        ex.functions.placeLimit(eth_perp, 0, PRICE, 10_000 * LOT).call({"from": long_})
    assert decode(["uint32", "string"], bytes.fromhex(str(caught.value.data)[2:])[4:])[0] == 50
    assert send(w3, ex.functions.placeLimit(eth_perp, 1, PRICE, 1_000 * LOT), short).status == 1
    receipt = send(w3, ex.functions.placeLimit(eth_perp, 0, PRICE, 1_000 * LOT), long_)
    assert receipt.status == 1
    changes = ex.events.PositionChanged().process_receipt(receipt, errors=DISCARD)
    assert sorted(c.args.size for c in changes) == [-10**18, 10**18]
    size, entry, pnl, _ = ex.functions.position(long_, eth_perp).call()
    assert (size, entry, pnl) == (10**18, 3000 * 10**6, 0)
    equity, available_open, available_liq, naive_open, _ = ex.functions.margin(long_).call()
    assert 0 < available_open < available_liq < equity
    # The price moves: the long gains exactly what the short loses (before fees).
    assert send(w3, ex.functions.setOraclePrice(WETH, 3100 * 10**6), oracle).status == 1
    assert ex.functions.position(long_, eth_perp).call()[2] == 100 * 10**6
    assert ex.functions.position(short, eth_perp).call()[2] == -100 * 10**6


def test_a_derisk_policy_then_a_liquidation_on_chain(devnet_factory):
    """The trader's own policy reduces its position when its margin runs low; an
    account without one is liquidated by anyone once its liquidation margin is gone."""
    node = devnet_factory("--block-time", "0.2")
    w3 = Web3(Web3.HTTPProvider(node.url))
    ex = exchange_contract(w3)
    maker, careful, reckless, bidder, oracle = (w3.eth.accounts[i] for i in (3, 4, 5, 6, 9))
    eth_perp = 2
    assert send(w3, ex.functions.setOraclePrice(WETH, 3000 * 10**6), oracle).status == 1
    for account, usdc in ((maker, 10_000), (careful, 1_000), (reckless, 1_000), (bidder, 20_000)):
        assert send(w3, ex.functions.deposit(USDC, usdc * 10**6), account).status == 1
    assert send(w3, ex.functions.placeLimit(eth_perp, 1, PRICE, 2_000 * LOT), maker).status == 1
    for account in (careful, reckless):
        assert send(w3, ex.functions.placeLimit(eth_perp, 0, PRICE, 1_000 * LOT), account).status == 1
    # careful: "if my liquidation-level margin falls below 500 USDC, close half my ETH-PERP".
    rules = [2, 0, 500 * 10**6, 2, eth_perp, 500_000]
    receipt = send(w3, ex.functions.setDeriskPolicy(rules), careful)
    assert receipt.status == 1
    assert ex.events.DeriskPolicySet().process_receipt(receipt, errors=DISCARD)[0].args.rules == rules
    # Someone bids for ETH-PERP below the market: the liquidity the unwinds will hit.
    assert send(w3, ex.functions.placeLimit(eth_perp, 0, 2_490_000, 3_000 * LOT), bidder).status == 1
    assert send(w3, ex.functions.setOraclePrice(WETH, 2500 * 10**6), oracle).status == 1
    # The policy runs in the next block's tick, for careful only.
    wait_until(lambda: ex.functions.position(careful, eth_perp).call()[0] < 10**18, timeout=20)
    assert ex.functions.position(careful, eth_perp).call()[0] >= 0
    assert ex.functions.position(reckless, eth_perp).call()[0] == 10**18
    # Not liquidatable yet: liquidation is refused with NOT_LIQUIDATABLE (55).
    with pytest.raises(ContractCustomError) as caught:
        ex.functions.liquidate(reckless).call({"from": bidder})
    assert decode(["uint32", "string"], bytes.fromhex(str(caught.value.data)[2:])[4:])[0] == 55
    assert send(w3, ex.functions.setOraclePrice(WETH, 2200 * 10**6), oracle).status == 1
    assert reckless in ex.functions.liquidatableAccounts().call()
    receipt = send(w3, ex.functions.liquidate(reckless), bidder)
    assert receipt.status == 1
    (done,) = ex.events.AccountLiquidated().process_receipt(receipt, errors=DISCARD)
    assert (done.args.liquidator, done.args.account, done.args.shortfall) == (bidder, reckless, 0)
    assert ex.functions.position(reckless, eth_perp).call()[0] == 0
    assert ex.functions.balanceOf(reckless, WETH).call() == [0, 0]
    # The reward is at most 1 % of what the account kept.
    reward = done.args.reward
    assert 0 < reward <= (done.args.remaining + reward) // 100


def test_what_the_block_hooks_do_reaches_clients_as_logs(devnet):
    """An order that expires is cancelled by the next block's hook, not by any
    transaction: its OrderCancelled (reason EXPIRED) is a log of that block,
    found by eth_getLogs and a log filter, under the block's system-log
    transaction hash. Found by review: the hooks' events (expiries, funding,
    maturities, de-risk actions and their fills) were dropped."""
    from node.chain.blocks import system_tx_hash

    w3 = Web3(Web3.HTTPProvider(devnet.url))
    ex = exchange_contract(w3)
    maker = w3.eth.accounts[3]
    send(w3, ex.functions.deposit(USDC, 10**10), maker)
    flt = ex.events.OrderCancelled().create_filter(from_block="latest", argument_filters={"account": maker})
    expires = w3.eth.get_block("latest").timestamp + 60
    receipt = send(w3, ex.functions.placeOrder(ETH_USDC, 0, PRICE // 2, LOT, 0, 0, 0, 0, expires, False), maker)  # rests
    order_id = ex.events.OrderAccepted().process_receipt(receipt, errors=DISCARD)[0].args.orderId
    wait_until(lambda: w3.eth.block_number >= receipt.blockNumber, timeout=20)  # sealed: 'latest' holds it
    assert ex.functions.getOrder(maker, order_id).call()[0]
    w3.provider.make_request("evm_increaseTime", [120])  # the next blocks are past its expiry

    def cancelled():
        return ex.events.OrderCancelled().get_logs(from_block=receipt.blockNumber,
                                                   argument_filters={"account": maker})

    wait_until(lambda: cancelled(), timeout=20)
    [log] = cancelled()
    assert (log.args.orderId, log.args.reason) == (order_id, 3)  # CancelReason.EXPIRED
    assert log.transactionHash == system_tx_hash(log.blockNumber)
    block = w3.eth.get_block(log.blockNumber)
    assert log.transactionIndex == len(block.transactions)
    # and its receipt is served, as Bor serves a state-sync's (a client reading a log's receipt)
    hook_receipt = w3.eth.get_transaction_receipt(log.transactionHash)
    assert (hook_receipt.status, hook_receipt.blockNumber, hook_receipt.blockHash) == (1, log.blockNumber, block.hash)
    assert log.logIndex in [entry.logIndex for entry in hook_receipt.logs]
    assert {entry.transactionHash for entry in hook_receipt.logs} == {log.transactionHash}
    [again] = ex.events.OrderCancelled().process_receipt(hook_receipt, errors=DISCARD)  # decodes as any receipt
    assert again.args.orderId == order_id
    assert not ex.functions.getOrder(maker, order_id).call()[0]
    assert ex.functions.balanceOf(maker, USDC).call() == [10**10, 0]  # the hold came back
    assert [entry.args.orderId for entry in flt.get_all_entries()] == [order_id]
