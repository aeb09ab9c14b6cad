"""Restart and crash safety on the real LevelDB store."""
from __future__ import annotations

from eth_account import Account
from web3 import Web3

from tests.conftest import DEV_KEYS, rpc, wait_until
from tests.integration.test_devnet import ARTIFACTS, deploy_counter, signed_transfer


def test_restart_resumes_head_balances_code_storage_receipts_and_logs(devnet_factory, tmp_path):
    data = str(tmp_path / "chain")
    node = devnet_factory("--block-time", "0.1", data_dir=data)
    w3 = Web3(Web3.HTTPProvider(node.url))
    counter, deploy_receipt = deploy_counter(w3)
    tx = counter.functions.add(41).transact({"from": w3.eth.accounts[0]})
    receipt = w3.eth.wait_for_transaction_receipt(tx, timeout=20)
    transfer = w3.eth.send_transaction({"from": w3.eth.accounts[3], "to": w3.eth.accounts[4], "value": 123})
    w3.eth.wait_for_transaction_receipt(transfer, timeout=20)
    wait_until(lambda: w3.eth.block_number > receipt.blockNumber + 1)
    before = {
        "head": w3.eth.get_block("latest"),
        "balance": w3.eth.get_balance(w3.eth.accounts[4]),
        "nonce": w3.eth.get_transaction_count(w3.eth.accounts[0]),
        "code": w3.eth.get_code(counter.address),
        "count": counter.functions.count().call(),
        "receipt": w3.eth.get_transaction_receipt(tx),
        "logs": w3.eth.get_logs({"fromBlock": 0, "address": counter.address}),
    }
    assert node.stop() == 0
    again = devnet_factory("--block-time", "0.1", data_dir=data)
    w3 = Web3(Web3.HTTPProvider(again.url))
    head = w3.eth.get_block(before["head"].number)
    assert head.hash == before["head"].hash and head.stateRoot == before["head"].stateRoot
    assert w3.eth.block_number >= before["head"].number
    assert w3.eth.get_balance(w3.eth.accounts[4]) == before["balance"]
    assert w3.eth.get_transaction_count(w3.eth.accounts[0]) == before["nonce"]
    assert w3.eth.get_code(counter.address) == before["code"]
    counter = w3.eth.contract(address=counter.address, abi=ARTIFACTS["Counter"]["abi"])
    assert counter.functions.count().call() == before["count"] == 41
    assert w3.eth.get_transaction_receipt(tx) == before["receipt"]
    assert w3.eth.get_logs({"fromBlock": 0, "address": counter.address}) == before["logs"]
    # And it keeps going from there.
    more = counter.functions.increment().transact({"from": w3.eth.accounts[0]})
    assert w3.eth.wait_for_transaction_receipt(more, timeout=20).status == 1
    assert counter.functions.count().call() == 42


def test_kill_9_loses_no_preconfirmed_or_acknowledged_transaction(devnet_factory, tmp_path):
    data = str(tmp_path / "chain")
    # Long blocks: everything below is preconfirmed in mini-blocks but not yet sealed.
    node = devnet_factory("--block-time", "60", data_dir=data)
    w3 = Web3(Web3.HTTPProvider(node.url))
    key = DEV_KEYS[0]
    sender = Account.from_key(key).address
    receipts = []
    for nonce in range(5):
        out = rpc(node.url, "eth_sendRawTransactionSync", ["0x" + signed_transfer(w3, key, nonce, value=10).hex(), 5000])
        receipts.append(out["result"])
    assert w3.eth.block_number == 0 or all(int(r["blockNumber"], 16) > w3.eth.block_number for r in receipts)
    # Acknowledged but not executable yet (nonce gap): it must survive the kill too.
    queued = rpc(node.url, "eth_sendRawTransaction", ["0x" + signed_transfer(w3, key, 6, value=1000).hex()])["result"]
    node.kill()
    again = devnet_factory("--block-time", "60", data_dir=data)
    w3 = Web3(Web3.HTTPProvider(again.url))
    assert w3.eth.get_transaction_count(sender) == 5
    assert w3.eth.get_balance(Web3.to_checksum_address("0x" + "42" * 20)) == 50
    for r in receipts:
        got = w3.eth.get_transaction_receipt(r["transactionHash"])
        assert got.status == 1 and got.gasUsed == 21000
    filler = rpc(again.url, "eth_sendRawTransaction", ["0x" + signed_transfer(w3, key, 5, value=1).hex()])["result"]
    assert w3.eth.wait_for_transaction_receipt(queued, timeout=20).status == 1
    assert w3.eth.get_transaction_receipt(filler).status == 1
    assert w3.eth.get_transaction_count(sender) == 7
    # Recovery sealed the replayed block: its receipts have the real block hash.
    sealed = w3.eth.get_transaction_receipt(receipts[-1]["transactionHash"])
    assert sealed.blockHash == w3.eth.get_block(sealed.blockNumber).hash
