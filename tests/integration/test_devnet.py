"""The devnet as a user meets it: a real `blixt devnet` process driven with web3.py."""
from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from eth_account import Account
from web3 import Web3
from web3.exceptions import ContractCustomError, ContractLogicError, Web3RPCError

from tests.conftest import DEV_KEYS, rpc, wait_until

ARTIFACTS = json.loads((Path(__file__).parent.parent / "contracts" / "artifacts.json").read_text())
CHAIN_ID = 31337


def deploy_counter(w3):
    c = ARTIFACTS["Counter"]
    factory = w3.eth.contract(abi=c["abi"], bytecode=c["bytecode"])
    tx_hash = factory.constructor().transact({"from": w3.eth.accounts[0]})
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=20)
    assert receipt.status == 1
    return w3.eth.contract(address=receipt.contractAddress, abi=c["abi"]), receipt


def signed_transfer(w3, key: str, nonce: int, value: int = 1, **overrides) -> bytes:
    tx = {"type": 2, "chainId": CHAIN_ID, "nonce": nonce, "to": "0x" + "42" * 20, "value": value,
          "gas": 21000, "maxFeePerGas": 10**10, "maxPriorityFeePerGas": 10**9}
    tx.update(overrides)
    return bytes(Account.sign_transaction(tx, key).raw_transaction)


def test_banner_lists_dev_accounts_keys_and_chain_id(devnet):
    assert "Chain ID:          31337" in devnet.banner
    assert "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266 (10000 ETH)" in devnet.banner
    assert DEV_KEYS[0] in devnet.banner
    assert devnet.url in devnet.banner


def test_basic_queries(w3):
    assert w3.eth.chain_id == CHAIN_ID
    assert w3.net.version == str(CHAIN_ID)
    assert len(w3.eth.accounts) == 10
    assert w3.eth.get_balance(w3.eth.accounts[9]) == 10_000 * 10**18
    assert w3.eth.syncing is False
    assert w3.eth.get_block("latest").number == w3.eth.block_number
    assert w3.eth.gas_price > 0


def test_transfer_moves_value_and_charges_gas(w3):
    a, b = w3.eth.accounts[1], "0x" + "77" * 20
    before_a = w3.eth.get_balance(a)
    tx_hash = w3.eth.send_transaction({"from": a, "to": Web3.to_checksum_address(b), "value": 10**18})
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=20)
    assert receipt.status == 1 and receipt.gasUsed == 21000
    assert w3.eth.get_balance(Web3.to_checksum_address(b)) == 10**18
    assert w3.eth.get_balance(a) == before_a - 10**18 - 21000 * receipt.effectiveGasPrice
    tx = w3.eth.get_transaction(tx_hash)
    assert tx["from"] == a and tx.value == 10**18
    # Once sealed, the receipt carries the real block hash, and the block holds the tx.
    sealed = wait_until(lambda: w3.eth.block_number >= receipt.blockNumber and
                        w3.eth.get_transaction_receipt(tx_hash))
    block = w3.eth.get_block(receipt.blockNumber)
    assert sealed.blockHash == block.hash
    assert tx_hash in block.transactions


def test_contract_events_logs_filters_and_reverts(w3):
    counter, deploy_receipt = deploy_counter(w3)
    log_filter = w3.eth.filter({"address": counter.address})
    block_filter = w3.eth.filter("latest")
    tx_hash = counter.functions.increment().transact({"from": w3.eth.accounts[0]})
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=20)
    events = counter.events.Incremented().process_receipt(receipt)
    assert events[0].args.newCount == 1 and events[0].args.by == w3.eth.accounts[0]
    assert counter.functions.count().call() == 1
    wait_until(lambda: w3.eth.block_number >= receipt.blockNumber)
    logs = w3.eth.get_logs({"fromBlock": deploy_receipt.blockNumber, "toBlock": "latest",
                            "address": counter.address})
    assert [log.transactionHash for log in logs] == [tx_hash]
    topic = Web3.keccak(text="Incremented(address,uint256)")
    assert w3.eth.get_logs({"fromBlock": 0, "topics": [topic]})[-1].transactionHash == tx_hash
    assert w3.eth.get_logs({"fromBlock": 0, "topics": ["0x" + "00" * 32]}) == []
    changes = wait_until(lambda: log_filter.get_new_entries())
    assert changes[0].transactionHash == tx_hash
    assert wait_until(lambda: block_filter.get_new_entries())
    # Reverts: reason strings and custom errors reach the caller, code 3 with data.
    with pytest.raises(ContractLogicError, match="counter: nope"):
        counter.functions.failWithReason().call()
    with pytest.raises(ContractCustomError):
        counter.functions.add(5000).call()
    raw = rpc(w3.provider.endpoint_uri, "eth_call",
              [{"to": counter.address, "data": counter.encode_abi("failWithReason")}, "latest"])
    assert raw["error"]["code"] == 3 and raw["error"]["data"].startswith("0x08c379a0")
    # A reverting transaction is included with status 0.
    tx_hash = counter.functions.add(5000).transact({"from": w3.eth.accounts[0], "gas": 100_000})
    failed = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=20)
    assert failed.status == 0
    assert counter.functions.count().call() == 1
    number, timestamp, basefee = counter.functions.blockInfo().call()
    assert number >= receipt.blockNumber and timestamp > 0


def test_estimate_gas_is_enough_and_tight(w3):
    counter, _ = deploy_counter(w3)
    estimate = counter.functions.add(3).estimate_gas({"from": w3.eth.accounts[2]})
    tx_hash = counter.functions.add(3).transact({"from": w3.eth.accounts[2], "gas": estimate})
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=20)
    assert receipt.status == 1
    assert receipt.gasUsed <= estimate <= receipt.gasUsed * 105 // 100 + 2300
    assert w3.eth.estimate_gas({"from": w3.eth.accounts[2], "to": "0x" + "55" * 20, "value": 1}) == 21000


def test_state_overrides_in_eth_call(w3):
    rich = "0x" + "99" * 20
    result = rpc(w3.provider.endpoint_uri, "eth_call", [
        {"from": rich, "to": "0x" + "98" * 20, "value": hex(10**30)}, "latest",
        {rich: {"balance": hex(10**31)}}])
    assert result["result"] == "0x"
    assert w3.eth.get_balance(Web3.to_checksum_address(rich)) == 0


def test_nonce_rules_and_bad_input_get_standard_errors(w3, devnet):
    url = devnet.url
    key = DEV_KEYS[2]
    sender = Account.from_key(key).address
    nonce = w3.eth.get_transaction_count(sender)
    state_before = (w3.eth.get_balance(sender), nonce)

    def send(raw: bytes):
        return rpc(url, "eth_sendRawTransaction", ["0x" + raw.hex()])

    assert send(b"\xf8\x01\x02")["error"]["code"] == -32602                       # malformed RLP
    assert "chain id" in send(signed_transfer(w3, key, nonce, chainId=1))["error"]["message"]
    bad_sig = bytearray(signed_transfer(w3, key, nonce))
    bad_sig[-40] ^= 0xFF
    assert send(bytes(bad_sig))["error"]["code"] in (-32000, -32602)
    if nonce:
        low = send(signed_transfer(w3, key, nonce - 1))["error"]
        assert low["code"] == -32000 and "nonce too low" in low["message"]
    poor = Account.create()
    err = send(signed_transfer(w3, poor.key, 0))["error"]
    assert err["code"] == -32000 and "insufficient funds" in err["message"]
    err = send(signed_transfer(w3, key, nonce, gas=10**11))["error"]
    assert err["code"] == -32000 and "gas limit" in err["message"]
    assert rpc(url, "eth_getBalance", [sender, "nonsense"])["error"]["code"] == -32602
    assert rpc(url, "eth_nope", [])["error"]["code"] == -32601
    # Garbage JSON over a raw socket.
    with socket.create_connection(("127.0.0.1", devnet.port), timeout=10) as s:
        body = b"{not json"
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
                  + str(len(body)).encode() + b"\r\n\r\n" + body)
        assert b"-32700" in s.recv(65536)
    # Oversized body: HTTP 413, and the node keeps serving.
    import urllib.error
    import urllib.request
    big = b'{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":["' + b"a" * (6 * 1024 * 1024) + b'"]}'
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(urllib.request.Request(url, big, {"Content-Type": "application/json"}), timeout=20)
    assert info.value.code == 413
    assert (w3.eth.get_balance(sender), w3.eth.get_transaction_count(sender)) == state_before
    # A future nonce waits; filling the gap releases both, in order.
    h2 = send(signed_transfer(w3, key, nonce + 1))["result"]
    assert w3.eth.get_transaction_count(sender) == nonce
    # A same-nonce replacement needs a fee bump.
    under = send(signed_transfer(w3, key, nonce + 1, value=2))["error"]
    assert "underpriced" in under["message"]
    h1 = send(signed_transfer(w3, key, nonce))["result"]
    r1 = w3.eth.wait_for_transaction_receipt(h1, timeout=20)
    r2 = w3.eth.wait_for_transaction_receipt(h2, timeout=20)
    assert (r1.blockNumber, r1.transactionIndex) < (r2.blockNumber, r2.transactionIndex)
    assert w3.eth.get_transaction_count(sender) == nonce + 2


def test_batch_requests(devnet):
    import urllib.request
    batch = [{"jsonrpc": "2.0", "id": i, "method": m, "params": []}
             for i, m in enumerate(["eth_chainId", "eth_blockNumber", "eth_nope"])]
    req = urllib.request.Request(devnet.url, json.dumps(batch).encode(), {"Content-Type": "application/json"})
    out = json.loads(urllib.request.urlopen(req, timeout=10).read())
    assert [r["id"] for r in out] == [0, 1, 2]
    assert out[0]["result"] == hex(CHAIN_ID) and out[2]["error"]["code"] == -32601


def test_send_raw_transaction_sync_returns_the_receipt(w3, devnet):
    key = DEV_KEYS[1]
    sender = Account.from_key(key).address
    nonce = w3.eth.get_transaction_count(sender, "pending")
    out = rpc(devnet.url, "eth_sendRawTransactionSync", ["0x" + signed_transfer(w3, key, nonce).hex(), 5000])
    receipt = out["result"]
    assert receipt["status"] == "0x1" and receipt["from"].lower() == sender.lower()
    assert int(receipt["blockNumber"], 16) >= w3.eth.block_number
    # The alias, and code 5 for a transaction that cannot run yet (nonce gap).
    alias = rpc(devnet.url, "realtime_sendRawTransaction", ["0x" + signed_transfer(w3, key, nonce + 1).hex()])
    assert alias["result"]["status"] == "0x1"
    gap = rpc(devnet.url, "eth_sendRawTransactionSync", ["0x" + signed_transfer(w3, key, nonce + 5).hex(), 500])
    assert gap["error"]["code"] == 5 and gap["error"]["data"].startswith("0x")


def test_realtime_reads_see_the_latest_miniblock(w3, devnet_factory):
    slow = devnet_factory("--block-time", "30")
    w3s = Web3(Web3.HTTPProvider(slow.url))
    key = DEV_KEYS[0]
    to = Web3.to_checksum_address("0x" + "42" * 20)
    out = rpc(slow.url, "eth_sendRawTransactionSync", ["0x" + signed_transfer(w3s, key, 0, value=777).hex()])
    receipt = out["result"]
    assert receipt["blockHash"] == "0x" + "00" * 32  # placeholder until the block seals
    assert w3s.eth.get_balance(to) == 777                           # latest = mini-block state
    assert w3s.eth.get_balance(to, w3s.eth.block_number) == 0       # a number = sealed state
    assert w3s.eth.get_transaction_receipt(receipt["transactionHash"]).status == 1
    rpc(slow.url, "evm_mine", [])
    assert w3s.eth.get_balance(to, w3s.eth.block_number) == 777


def test_instant_mode_seals_one_block_per_transaction(devnet_factory):
    node = devnet_factory("--instant")
    w3i = Web3(Web3.HTTPProvider(node.url))
    start = w3i.eth.block_number
    hashes = [w3i.eth.send_transaction({"from": w3i.eth.accounts[0], "to": w3i.eth.accounts[1], "value": i + 1})
              for i in range(3)]
    receipts = [w3i.eth.wait_for_transaction_receipt(h, timeout=20) for h in hashes]
    assert [r.blockNumber for r in receipts] == [start + 1, start + 2, start + 3]
    assert all(r.blockHash == w3i.eth.get_block(r.blockNumber).hash for r in receipts)


def test_dev_methods_snapshot_revert_and_setters(devnet_factory):
    node = devnet_factory("--instant")
    w3i = Web3(Web3.HTTPProvider(node.url))
    target = Web3.to_checksum_address("0x" + "ab" * 20)
    snap = w3i.provider.make_request("evm_snapshot", [])["result"]
    head = w3i.eth.block_number
    w3i.provider.make_request("anvil_setBalance", [target, hex(5 * 10**18)])
    w3i.provider.make_request("anvil_setNonce", [target, "0x7"])
    w3i.provider.make_request("anvil_setCode", [target, "0x6001600055"])
    w3i.provider.make_request("hardhat_setStorageAt", [target, "0x1", "0x" + "00" * 31 + "2a"])
    assert w3i.eth.get_balance(target) == 5 * 10**18
    assert w3i.eth.get_transaction_count(target) == 7
    assert w3i.eth.get_code(target) == bytes.fromhex("6001600055")
    assert int.from_bytes(w3i.eth.get_storage_at(target, 1), "big") == 42
    w3i.eth.wait_for_transaction_receipt(
        w3i.eth.send_transaction({"from": w3i.eth.accounts[0], "to": w3i.eth.accounts[1], "value": 1}), timeout=20)
    assert w3i.eth.block_number > head
    assert w3i.provider.make_request("evm_revert", [snap])["result"] is True
    assert w3i.eth.block_number == head
    assert w3i.eth.get_balance(target) == 0 and w3i.eth.get_code(target) == b""
    # Time travel.
    ts = w3i.eth.get_block("latest").timestamp
    w3i.provider.make_request("evm_setNextBlockTimestamp", [ts + 1000])
    w3i.provider.make_request("evm_mine", [])
    assert w3i.eth.get_block("latest").timestamp == ts + 1000
    w3i.provider.make_request("evm_increaseTime", [3600])
    w3i.provider.make_request("evm_mine", [])
    assert w3i.eth.get_block("latest").timestamp >= ts + 3600
    # Impersonation: send from an address whose key nobody has.
    whale = Web3.to_checksum_address("0x" + "cd" * 20)
    w3i.provider.make_request("anvil_setBalance", [whale, hex(10**18)])
    with pytest.raises(Web3RPCError):
        w3i.eth.send_transaction({"from": whale, "to": target, "value": 5, "gas": 21000})
    w3i.provider.make_request("anvil_impersonateAccount", [whale])
    receipt = w3i.eth.wait_for_transaction_receipt(
        w3i.eth.send_transaction({"from": whale, "to": target, "value": 5, "gas": 21000}), timeout=20)
    assert receipt.status == 1 and receipt["from"] == whale
    assert w3i.eth.get_balance(target) == 5


def test_calls_at_an_explicit_block_read_that_sealed_state(devnet_factory):
    node = devnet_factory("--instant")
    w3i = Web3(Web3.HTTPProvider(node.url))
    counter, deploy_receipt = deploy_counter(w3i)
    numbers = []
    for _ in range(3):
        tx = counter.functions.increment().transact({"from": w3i.eth.accounts[0]})
        numbers.append(w3i.eth.wait_for_transaction_receipt(tx, timeout=20).blockNumber)
    assert counter.functions.count().call() == 3
    assert [counter.functions.count().call(block_identifier=n) for n in numbers] == [1, 2, 3]
    # Before the deploy there is no code: the call returns nothing.
    before = w3i.eth.call({"to": counter.address, "data": counter.encode_abi("count")},
                          deploy_receipt.blockNumber - 1)
    assert before == b""
    # The block context is that block's, and a call at an old block changes nothing.
    number, _ts, _fee = counter.functions.blockInfo().call(block_identifier=numbers[0])
    assert number == numbers[0]
    assert counter.functions.count().call() == 3


def test_pending_transaction_filter_and_filter_logs(w3, devnet):
    counter, _ = deploy_counter(w3)
    pending = w3.eth.filter("pending")
    logs_filter = w3.eth.filter({"address": counter.address, "fromBlock": 0})
    tx = counter.functions.increment().transact({"from": w3.eth.accounts[5]})
    assert tx in wait_until(lambda: pending.get_new_entries())
    receipt = w3.eth.wait_for_transaction_receipt(tx, timeout=20)
    wait_until(lambda: w3.eth.block_number >= receipt.blockNumber)
    all_logs = w3.eth.get_filter_logs(logs_filter.filter_id)
    assert [log.transactionHash for log in all_logs] == [tx]
    assert w3.eth.uninstall_filter(pending.filter_id) is True
    assert rpc(devnet.url, "eth_getFilterChanges", [pending.filter_id])["error"]["code"] == -32000


def test_mining_methods(devnet_factory):
    node = devnet_factory("--block-time", "30")
    w3s = Web3(Web3.HTTPProvider(node.url))
    start = w3s.eth.block_number
    assert rpc(node.url, "anvil_mine", ["0x3"])["result"] == "0x0"
    assert w3s.eth.block_number == start + 3
    ts = w3s.eth.get_block("latest").timestamp
    rpc(node.url, "hardhat_mine", ["0x2", "0x64"])
    assert w3s.eth.block_number == start + 5
    assert w3s.eth.get_block("latest").timestamp == ts + 200
    rpc(node.url, "evm_mine", [ts + 1000])
    assert w3s.eth.get_block("latest").timestamp == ts + 1000
    assert w3s.eth.block_number == start + 6
