"""The arithmetic of a run: percentiles, the open-loop schedule, error grouping,
request encoding, CPU readers, the workload registry — no node needed."""

from __future__ import annotations

import asyncio
import json
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.stress import WORKLOADS, main
from node.stress.report import block_summary
from node.stress.runner import encode_requests
from node.stress.stats import (
    distribution,
    due_count,
    error_reason,
    percentile,
    process_cpu_seconds,
    process_tree,
    scheduled_time,
)
from node.stress.workloads import ExchangeOrders as ExchangeOrdersHook
from node.stress.workloads import SetupContext, WorkloadUnavailable


def test_percentile_is_nearest_rank():
    values = [1, 2, 3, 4]
    assert percentile(values, 50) == 2
    assert percentile(values, 51) == 3
    assert percentile(values, 100) == 4
    assert percentile(values, 0.1) == 1
    hundred = list(range(1, 101))
    assert (percentile(hundred, 50), percentile(hundred, 90), percentile(hundred, 99)) == (50, 90, 99)
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile(values, 0)


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=200), st.floats(0.01, 100))
def test_percentile_is_an_observed_value_with_enough_below(values, p):
    ordered = sorted(values)
    value = percentile(ordered, p)
    assert value in ordered
    assert sum(1 for v in ordered if v <= value) >= p / 100 * len(ordered)


def test_distribution_scales_and_orders():
    summary = distribution([0.003, 0.001, 0.002, 0.010], scale=1000.0)
    assert summary == {"count": 4, "mean": 4.0, "p50": 2.0, "p90": 10.0, "p99": 10.0, "max": 10.0}
    assert distribution([]) is None


def test_open_loop_schedule_releases_sends_on_time_and_never_more_than_planned():
    assert due_count(0.0, 1000, 10_000) == 1  # the first send is due at t = 0
    assert due_count(0.0015, 1000, 10_000) == 2
    assert due_count(1.0, 1000, 10_000) == 1001
    assert due_count(100.0, 1000, 10_000) == 10_000
    assert due_count(-1.0, 1000, 10) == 0
    assert due_count(0.0, None, 123) == 123  # no rate: everything is due


@given(st.integers(0, 100_000), st.floats(1, 50_000))
def test_schedule_and_due_count_agree(index, rate):
    # Send `index` is due exactly when the released count passes it.
    at = scheduled_time(index, rate)
    assert due_count(at + 1e-9, rate, 10**9) >= index + 1
    if index:
        assert due_count(scheduled_time(index - 1, rate), rate, 10**9) <= index + 1


def test_error_reasons_group_messages_that_differ_only_in_numbers_and_hex():
    a = error_reason({"code": -32003, "message": "nonce too low: next nonce 5, tx nonce 3"})
    b = error_reason({"code": -32003, "message": "nonce too low: next nonce 17, tx nonce 4"})
    assert a == b == "nonce too low: next nonce N, tx nonce N [code -32003]"
    c = error_reason({"code": -32000, "message": "insufficient funds for 0xabc123"})
    assert c == "insufficient funds for 0x… [code -32000]"
    assert error_reason("connection closed by the node") == "connection closed by the node"


def test_requests_are_encoded_once_with_the_transaction_index_as_id():
    raws = [bytes([i]) * 3 for i in range(5)]
    single = encode_requests(raws, 1, sync=False, sync_timeout_ms=None)
    assert [json.loads(b) for b in single][3] == {
        "jsonrpc": "2.0", "id": 3, "method": "eth_sendRawTransaction", "params": ["0x030303"]
    }
    batched = [json.loads(b) for b in encode_requests(raws, 2, sync=False, sync_timeout_ms=None)]
    assert [len(b) for b in batched] == [2, 2, 1]
    assert [call["id"] for b in batched for call in b] == [0, 1, 2, 3, 4]
    sync = json.loads(encode_requests(raws, 1, sync=True, sync_timeout_ms=2000)[0])
    assert sync["method"] == "eth_sendRawTransactionSync" and sync["params"] == ["0x000000", 2000]


def test_cpu_readers_see_this_process_and_not_a_missing_one():
    before = process_cpu_seconds(os.getpid())
    sum(i * i for i in range(300_000))  # burn a little CPU so the counter moves
    after = process_cpu_seconds(os.getpid())
    assert before is not None and after >= before
    assert process_cpu_seconds(2**22 + 12345) is None
    assert process_tree(os.getpid())[0] == os.getpid()


def test_block_summary_reports_stamped_and_observed_cadence():
    blocks = [(1, 100, 10.0, 5, 5), (2, 101, 11.0, 3, 4), (3, 101, 11.0, 0, 0), (4, 102, 12.5, 1, 1)]
    summary = block_summary(blocks)
    assert summary["count"] == 4 and summary["empty_blocks"] == 1
    assert summary["timestamp_interval_s"]["max"] == 1
    # Blocks 2 and 3 were seen in the same poll: one observed gap of 1 s, one of 1.5 s.
    assert summary["observed_interval_ms"]["count"] == 2
    assert summary["observed_interval_ms"]["max"] == 1500.0


def test_workload_registry_has_the_builtins_and_orders_refuses_clearly():
    assert {"transfers", "erc20", "call", "orders"} <= set(WORKLOADS)
    context = SetupContext(rpc=None, fees=None, dev_accounts=[], senders=[], transactions_per_sender=[], send_and_wait=None)
    # The built-in hook (precompiles/stress.py replaces it in the registry once
    # loaded; tests/stress/test_orders_workload.py covers the real one's refusal).
    with pytest.raises(WorkloadUnavailable, match="not available on this node"):
        asyncio.run(ExchangeOrdersHook().setup(context))


def test_unreachable_node_is_a_setup_error_not_a_crash(capsys):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connection refused
        code = main(["--rpc", f"http://127.0.0.1:{port}", "--count", "10", "--quiet"])
    assert code == 2
    assert "cannot connect" in capsys.readouterr().err


def test_bad_arguments_are_rejected_by_argparse():
    with pytest.raises(SystemExit):
        main(["--rpc", "ftp://example", "--quiet"])
    with pytest.raises(SystemExit):
        main(["--sync", "--batch", "4", "--quiet"])
    with pytest.raises(SystemExit):
        main(["--watch", "newheads", "--rpc", "http://127.0.0.1:1", "--quiet"])


def test_load_run_survives_a_node_that_closes_connections(tmp_path):
    """A fake node that answers every third request with `Connection: close` and hangs
    up: the run reopens connections and every transaction is still sent and accepted."""
    from node.stress.rpc import parse_endpoint
    from node.stress.runner import LoadOptions, LoadRun

    async def scenario():
        served = {"requests": 0}

        async def handle(reader, writer):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(next(l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")).split(b":")[1])
                call = json.loads(await reader.readexactly(length))
                served["requests"] += 1
                closing = served["requests"] % 3 == 0
                body = json.dumps({"jsonrpc": "2.0", "id": call["id"], "result": "0x" + "ab" * 32}).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s"
                    % (len(body), b"Connection: close\r\n" if closing else b"", body)
                )
                await writer.drain()
                if closing:
                    writer.close()
                    return

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        options = LoadOptions(
            rate=None, duration=None, batch=1, connections=2, inflight=1, sync=False, sync_timeout_ms=None,
            watch="none", poll_interval=0.01, drain=5, drain_idle=1, node_pid=None, progress=False,
        )
        raws = [bytes([i]) for i in range(30)]
        run = LoadRun(parse_endpoint(f"http://127.0.0.1:{port}"), encode_requests(raws, 1, False, None),
                      [bytes([i]) * 32 for i in range(30)], 0, options)
        await asyncio.wait_for(run.run(), 30)
        server.close()
        return run, served["requests"]

    run, served = asyncio.run(scenario())
    assert (run.accepted_count, run.error_count, run.unsent) == (30, 0, 0)
    assert served == 30 and run.reconnects >= 8


def test_load_run_ends_when_the_node_hangs_up_on_every_connection():
    """Bounded even when nothing works: every connection is closed on accept, the
    reconnect budget runs out, and the run ends with the transactions counted as
    failed or unsent instead of waiting forever."""
    from node.stress.rpc import parse_endpoint
    from node.stress.runner import LoadOptions, LoadRun

    async def scenario():
        async def hang_up(reader, writer):
            writer.close()

        server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        options = LoadOptions(
            rate=None, duration=None, batch=1, connections=2, inflight=1, sync=False, sync_timeout_ms=None,
            watch="none", poll_interval=0.01, drain=1, drain_idle=1, node_pid=None, progress=False,
        )
        run = LoadRun(parse_endpoint(f"http://127.0.0.1:{port}"), encode_requests([b"\x01"] * 500, 1, False, None),
                      [bytes([i % 256, i // 256]) * 16 for i in range(500)], 0, options)
        await asyncio.wait_for(run.run(), 60)
        server.close()
        return run

    run = asyncio.run(scenario())
    assert run.accepted_count == 0
    assert run.error_count + run.unsent == 500 and run.unsent > 0
    assert "no open connection to the node" in run.notes
