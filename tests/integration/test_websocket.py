"""WebSocket subscriptions on the RPC port: newHeads, miniBlocks, logs, pending txs."""
from __future__ import annotations

import json

from websockets.sync.client import connect
from web3 import Web3

from tests.integration.test_devnet import deploy_counter


def _subscribe(ws, *params):
    ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": list(params)}))
    reply = json.loads(ws.recv(timeout=10))
    assert "result" in reply, reply
    return reply["result"]


def _next_notification(ws, sub_id, timeout=10):
    while True:
        msg = json.loads(ws.recv(timeout=timeout))
        if msg.get("method") == "eth_subscription" and msg["params"]["subscription"] == sub_id:
            return msg["params"]["result"]


def test_subscriptions_deliver_heads_miniblocks_logs_and_pending(devnet_factory):
    node = devnet_factory("--block-time", "0.3")
    w3 = Web3(Web3.HTTPProvider(node.url))
    counter, _ = deploy_counter(w3)
    with connect(node.ws_url) as ws:
        heads = _subscribe(ws, "newHeads")
        head = _next_notification(ws, heads)
        assert int(head["number"], 16) >= 1 and "miniBlockCount" in head and len(head["hash"]) == 66
    with connect(node.ws_url) as ws:
        minis = _subscribe(ws, "miniBlocks")
        pending_logs = _subscribe(ws, "logs", {"address": counter.address, "fromBlock": "pending",
                                               "toBlock": "pending"})
        pending_txs = _subscribe(ws, "newPendingTransactions")
        tx = counter.functions.increment().transact({"from": w3.eth.accounts[0]})
        seen = {}
        while len(seen) < 3:
            msg = json.loads(ws.recv(timeout=10))
            if msg.get("method") == "eth_subscription":
                seen.setdefault(msg["params"]["subscription"], msg["params"]["result"])
        assert seen[pending_txs] == "0x" + tx.hex()
        mini = seen[minis]
        assert mini["transactions"][0]["hash"] == "0x" + tx.hex()
        assert mini["receipts"][0]["status"] == "0x1"
        log = seen[pending_logs]
        assert log["transactionHash"] == "0x" + tx.hex() and log["address"].lower() == counter.address.lower()
        # Unsubscribe stops the stream; eth_subscribe over HTTP is refused.
        ws.send(json.dumps({"jsonrpc": "2.0", "id": 2, "method": "eth_unsubscribe", "params": [minis]}))
    out = w3.provider.make_request("eth_subscribe", ["newHeads"])
    assert out["error"]["code"] == -32601
