"""The stress tester end to end against a live node (`rpc_url` fixture).

Client-only: every check goes through standard JSON-RPC, so these pass against
anvil, hardhat node or `blixt devnet`. Counts are small; the point is behaviour,
not speed (speed lives in bench/transfers.py).
"""

from __future__ import annotations

import asyncio
import json

from node.stress import main
from node.stress.keys import derived_senders
from node.stress.rpc import RpcClient
from node.stress.workloads import load_contract


def _run(tmp_path, rpc_url: str, *args: str) -> tuple[int, dict | None]:
    out = tmp_path / "summary.json"
    code = main(["--rpc", rpc_url, "--quiet", "--drain", "20", "--json", str(out), *args])
    return code, json.loads(out.read_text()) if out.exists() else None


def _rpc(url: str, calls: list[tuple[str, list]]) -> list:
    async def go():
        client = await RpcClient.connect(url)
        try:
            return await client.batch(calls)
        finally:
            await client.close()

    return asyncio.run(go())


def _nonces(url: str, seed: str, count: int) -> list[int]:
    senders = derived_senders(count, seed)
    return [int(n, 16) for n in _rpc(url, [("eth_getTransactionCount", [s.address_hex, "latest"]) for s in senders])]


def test_transfers_over_http_are_accepted_included_and_executed(rpc_url, tmp_path):
    before = _nonces(rpc_url, "live-http", 6)
    code, summary = _run(tmp_path, rpc_url, "--count", "120", "--accounts", "6", "--connections", "2", "--seed", "live-http")
    assert code == 0
    tx = summary["transactions"]
    assert (tx["sent"], tx["accepted"], tx["included"], tx["errors"]) == (120, 120, 120, 0)
    assert summary["errors_by_reason"] == {}
    latency = summary["inclusion_latency_ms"]
    assert latency["count"] == 120 and 0 <= latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    assert summary["rates"]["included_tx_per_s"] > 0
    assert summary["receipts_sampled"]["sampled"] > 0
    assert summary["receipts_sampled"]["succeeded"] == summary["receipts_sampled"]["sampled"]
    assert summary["blocks"]["count"] >= 1
    # On chain: each of the 6 senders sent exactly 20 transactions.
    assert [after - start for start, after in zip(before, _nonces(rpc_url, "live-http", 6))] == [20] * 6


def test_batched_requests_with_a_rate_stop_at_the_duration_bound(rpc_url, tmp_path):
    # 200 tx/s for 0.5 s: the schedule releases at most floor(0.5 × 200) + 1 = 101
    # transactions even though 400 were signed; every one of them lands.
    code, summary = _run(
        tmp_path, rpc_url, "--count", "400", "--rate", "200", "--duration", "0.5", "--batch", "10",
        "--accounts", "5", "--seed", "live-batch",
    )
    assert code == 0
    tx = summary["transactions"]
    assert tx["sent"] + tx["unsent"] == 400
    assert 0 < tx["sent"] <= 110  # whole batches of 10
    assert tx["accepted"] == tx["sent"] and tx["included"] == tx["accepted"]
    assert summary["schedule_lag_ms"]["count"] == tx["sent"] // 10


def test_erc20_workload_deploys_and_transfers(rpc_url, tmp_path):
    code, summary = _run(tmp_path, rpc_url, "--workload", "erc20", "--count", "40", "--accounts", "4", "--seed", "live-erc20")
    assert code == 0
    assert summary["transactions"]["included"] == 40 and summary["transactions"]["errors"] == 0
    token = summary["setup"]["erc20_token"]
    # Each sender was handed exactly its 10 tokens and passed one per transfer to the
    # next sender round the ring, receiving 10 from the previous one: 10 again. The
    # Transfer logs prove the 40 transfers executed.
    transfer_topic = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
    (logs,) = _rpc(rpc_url, [("eth_getLogs", [{"address": token, "fromBlock": "0x0", "toBlock": "latest", "topics": [transfer_topic]}])])
    senders = {s.address_hex[2:] for s in derived_senders(4, "live-erc20")}
    ring_transfers = [log for log in logs if log["topics"][1][-40:] in senders and log["topics"][2][-40:] in senders]
    assert len(ring_transfers) == 40


def test_call_workload_writes_contract_storage(rpc_url, tmp_path):
    code, summary = _run(tmp_path, rpc_url, "--workload", "call", "--count", "30", "--accounts", "3", "--seed", "live-call")
    assert code == 0
    assert summary["transactions"]["included"] == 30
    target = summary["setup"]["call_target"]
    calls_selector = "0x" + load_contract("StorageWriter")["methodIdentifiers"]["calls()"]
    (calls,) = _rpc(rpc_url, [("eth_call", [{"to": target, "data": calls_selector}, "latest"])])
    assert int(calls, 16) == 30


def test_websocket_transport_with_new_heads(rpc_url, tmp_path):
    ws_url = rpc_url.replace("http://", "ws://")
    code, summary = _run(tmp_path, ws_url, "--count", "60", "--accounts", "3", "--seed", "live-ws")
    assert code == 0
    assert summary["config"]["watch"] == "newheads"
    tx = summary["transactions"]
    assert (tx["accepted"], tx["included"], tx["errors"]) == (60, 60, 0)


def test_sync_mode_measures_round_trips_or_says_the_node_lacks_eip_7966(rpc_url, tmp_path, capsys):
    code, summary = _run(tmp_path, rpc_url, "--sync", "--count", "20", "--accounts", "2", "--seed", "live-sync")
    if code == 0:
        assert summary["sync_round_trip_ms"]["count"] == 20
        assert summary["transactions"]["included"] == 20
    else:
        assert code == 2 and summary is None
        assert "eth_sendRawTransactionSync" in capsys.readouterr().err


def test_miniblock_watch_counts_inclusion_at_preconfirmation(tmp_path):
    """Blixt's miniBlocks subscription as the inclusion signal (a realtime devnet,
    not --instant): every transaction seen, and the mini-blocks' block numbers read."""
    from tests.conftest import Devnet

    node = Devnet("--block-time", "1")
    try:
        ws_url = node.url.replace("http://", "ws://")
        code, summary = _run(tmp_path, ws_url, "--count", "200", "--accounts", "4", "--seed", "live-mb",
                             "--watch", "miniblocks")
    finally:
        node.stop()
    assert code == 0
    assert summary["config"]["watch"] == "miniblocks"
    tx = summary["transactions"]
    assert (tx["accepted"], tx["included"], tx["errors"]) == (200, 200, 0)
    blocks = summary["blocks"]
    assert blocks["count"] >= 1 and blocks["first"] >= 1
