"""`blixt stress`: arguments, the three phases, the report."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from .keys import DEFAULT_SEED, STANDARD_MNEMONIC
from .report import build_summary, format_table
from .rpc import RpcClient, RpcError, TransportError, parse_endpoint
from .runner import LoadOptions, LoadRun, UnsupportedMethod, encode_requests
from .setup import SetupError, prepare
from .signing import presign
from .workloads import WORKLOADS, WorkloadUnavailable, load_plugins

DEFAULT_COUNT = 10_000
EXIT_OK, EXIT_SETUP = 0, 2


def build_parser() -> argparse.ArgumentParser:
    load_plugins()
    parser = argparse.ArgumentParser(
        prog="blixt stress",
        description="Pre-sign transactions, send them open-loop to any Ethereum JSON-RPC node, "
        "and measure accepted and included tx/s, inclusion latency and block cadence.",
    )
    parser.add_argument("--rpc", default="http://127.0.0.1:8545", help="node URL, http(s):// or ws(s):// (default %(default)s)")
    parser.add_argument("--workload", "-w", default="transfers", choices=sorted(WORKLOADS), help="what each transaction does (default %(default)s)")
    parser.add_argument("--count", "-n", type=_positive_int, help=f"transactions to pre-sign and send (default: rate × duration when both are given, else {DEFAULT_COUNT:,})")
    parser.add_argument("--duration", "-d", type=_positive_float, help="stop sending after this many seconds (whichever of count/duration comes first)")
    parser.add_argument("--rate", "-r", type=_positive_float, help="target transactions per second, open loop (default: as fast as possible)")
    parser.add_argument("--batch", "-b", type=_positive_int, default=1, help="transactions per JSON-RPC batch request (default 1: single requests)")
    parser.add_argument("--connections", "-c", type=_positive_int, default=4, help="HTTP keep-alive connections or WebSockets (default %(default)s)")
    parser.add_argument("--inflight", type=_positive_int, help="requests in flight per connection (default 1 on HTTP, i.e. no pipelining; 64 on WebSocket)")
    parser.add_argument("--accounts", "-a", type=_positive_int, default=200, help="sender accounts derived from --seed (default %(default)s)")
    parser.add_argument("--seed", default=DEFAULT_SEED, help="seed for the sender keys (default %(default)r)")
    parser.add_argument("--mnemonic", default=STANDARD_MNEMONIC, help="mnemonic of the funded dev accounts (default: the standard test mnemonic)")
    parser.add_argument("--sync", action="store_true", help="send with eth_sendRawTransactionSync (EIP-7966) and measure the round trip")
    parser.add_argument("--sync-timeout-ms", type=_positive_int, help="timeout parameter passed to eth_sendRawTransactionSync")
    parser.add_argument("--watch", choices=("auto", "poll", "newheads", "miniblocks", "none"), default="auto",
                        help="how inclusion is observed: poll eth_getBlockByNumber, a newHeads or Blixt miniBlocks subscription (ws only), or not at all (default: poll on http, newheads on ws)")
    parser.add_argument("--poll-interval", type=_positive_float, default=0.01, help="seconds between block polls (default %(default)s)")
    parser.add_argument("--drain", type=float, default=30.0, help="seconds to wait for inclusion after the last send (default %(default)s)")
    parser.add_argument("--drain-idle", type=_positive_float, default=5.0, help="stop waiting after this many seconds without a new inclusion (default %(default)s)")
    parser.add_argument("--tip-gwei", type=float, default=1.0, help="max priority fee per gas (default %(default)s)")
    parser.add_argument("--max-fee-gwei", type=float, help="max fee per gas (default max(100, 4 × base fee + tip))")
    parser.add_argument("--sign-processes", type=_positive_int, help="processes for pre-signing (default: 2 when there are many transactions)")
    parser.add_argument("--setup-timeout", type=_positive_float, default=120.0, help="seconds to wait for setup transactions (default %(default)s)")
    parser.add_argument("--node-pid", type=_positive_int, help="PID of a local node: its CPU share (with child processes) is reported")
    parser.add_argument("--json", metavar="PATH", help="write the run summary as JSON to PATH")
    parser.add_argument("--quiet", "-q", action="store_true", help="no live progress line")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        endpoint = parse_endpoint(args.rpc)
    except ValueError as exc:
        parser.error(str(exc))
    if args.sync and args.batch > 1:
        parser.error("--sync sends one transaction per request: drop --batch")
    watch = args.watch
    if watch == "auto":
        watch = "newheads" if endpoint.is_websocket else "poll"
    if watch in ("newheads", "miniblocks") and not endpoint.is_websocket:
        parser.error(f"--watch {watch} needs a ws:// endpoint")
    if args.sync and args.watch == "auto":
        watch = "none"  # the receipt in each answer is the inclusion
    count = args.count or (int(args.rate * args.duration) if args.rate and args.duration else DEFAULT_COUNT)
    inflight = args.inflight or (64 if endpoint.is_websocket else 1)
    config = {
        "rpc": args.rpc,
        "workload": args.workload,
        "count": count,
        "duration": args.duration,
        "rate": args.rate,
        "batch": args.batch,
        "connections": args.connections,
        "inflight": inflight,
        "accounts": args.accounts,
        "seed": args.seed,
        "sync": args.sync,
        "watch": watch,
        "node_pid": args.node_pid,
    }
    _status(args, f"setup: {args.workload} × {count:,} against {args.rpc}")
    workload = WORKLOADS[args.workload]()
    try:
        preparation = _run(_prepare(endpoint, workload, count, args))
    except (SetupError, WorkloadUnavailable, RpcError, TransportError) as exc:
        print(f"blixt stress: {exc}", file=sys.stderr)
        return EXIT_SETUP

    _status(args, f"pre-signing {count:,} transactions from {len(preparation.senders)} senders")
    started = time.perf_counter()
    raws, hashes = presign(
        preparation.plans, [s.private_key for s in preparation.senders], preparation.fees, args.sign_processes
    )
    sign_seconds = time.perf_counter() - started
    processes = args.sign_processes or (2 if count >= 4_000 else 1)
    presign_stats = {
        "transactions": count,
        "seconds": round(sign_seconds, 3),
        "tx_per_s": round(count / sign_seconds, 1) if sign_seconds > 0 else None,
        "processes": processes,
    }
    bodies = encode_requests(raws, args.batch, args.sync, args.sync_timeout_ms)
    del raws
    options = LoadOptions(
        rate=args.rate,
        duration=args.duration,
        batch=args.batch,
        connections=args.connections,
        inflight=inflight,
        sync=args.sync,
        sync_timeout_ms=args.sync_timeout_ms,
        watch=watch,
        poll_interval=args.poll_interval,
        drain=args.drain,
        drain_idle=args.drain_idle,
        node_pid=args.node_pid,
        progress=not args.quiet,
    )
    run = LoadRun(endpoint, bodies, hashes, preparation.start_block, options)
    _status(args, "sending")
    try:
        receipts, outcomes = _run(_load(run, hashes, workload.receipt_outcomes))
    except UnsupportedMethod as exc:
        print(f"blixt stress: {exc}", file=sys.stderr)
        return EXIT_SETUP
    except TransportError as exc:
        print(f"blixt stress: {exc}", file=sys.stderr)
        return EXIT_SETUP
    summary = build_summary(config, preparation, run, presign_stats, receipts, outcomes)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(summary, out, indent=2)
            out.write("\n")
    print(format_table(summary))
    return EXIT_OK


async def _prepare(endpoint, workload, count, args):
    rpc = await RpcClient.connect(endpoint)
    try:
        return await prepare(
            rpc,
            workload,
            count,
            args.accounts,
            args.seed,
            args.mnemonic,
            args.tip_gwei,
            args.max_fee_gwei,
            args.setup_timeout,
        )
    finally:
        await rpc.close()


async def _load(run: LoadRun, hashes: list[bytes], outcomes: str | None) -> tuple[dict, dict | None]:
    await run.run()
    sample = await _sample_receipts(run, hashes)
    return sample, (await _receipt_outcomes(run, hashes, outcomes) if outcomes else None)


async def _receipt_outcomes(run: LoadRun, hashes: list[bytes], what: str, timeout: float = 120.0) -> dict:
    """Every included transaction's receipt, counted by status: `succeeded` (1) and
    `reverted` (0). For workloads whose reverts are outcomes (a rejected order).
    Bounded by `timeout`; `complete` is False when it ran out first."""
    included = [i for i in range(run.n_tx) if run.included_at[i] == run.included_at[i]]
    succeeded = reverted = missing = 0
    deadline = time.perf_counter() + timeout
    rpc = await RpcClient.connect(run.endpoint)
    checked = 0
    try:
        for start in range(0, len(included), 200):
            if time.perf_counter() > deadline:
                break
            chunk = included[start : start + 200]
            receipts = await rpc.batch([("eth_getTransactionReceipt", ["0x" + hashes[i].hex()]) for i in chunk])
            checked += len(chunk)
            for receipt in receipts:
                if not isinstance(receipt, dict):
                    missing += 1
                elif int(receipt.get("status", "0x0"), 16) == 1:
                    succeeded += 1
                else:
                    reverted += 1
    except (RpcError, TransportError) as exc:
        return {"of": what, "included": len(included), "checked": checked, "succeeded": succeeded,
                "reverted": reverted, "missing": missing, "complete": False, "error": str(exc)}
    finally:
        await rpc.close()
    return {"of": what, "included": len(included), "checked": checked, "succeeded": succeeded,
            "reverted": reverted, "missing": missing, "complete": checked == len(included)}


async def _sample_receipts(run: LoadRun, hashes: list[bytes], samples: int = 20) -> dict:
    """Check a spread of included transactions really executed (status 1): a run
    whose every transaction reverted is not a throughput figure."""
    included = [i for i in range(run.n_tx) if run.included_at[i] == run.included_at[i]]
    if not included:
        return {"sampled": 0, "succeeded": 0}
    step = max(1, len(included) // samples)
    chosen = included[::step][:samples]
    rpc = await RpcClient.connect(run.endpoint)
    try:
        receipts = await rpc.batch([("eth_getTransactionReceipt", ["0x" + hashes[i].hex()]) for i in chosen])
    except (RpcError, TransportError):
        return {"sampled": 0, "succeeded": 0}
    finally:
        await rpc.close()
    ok = sum(1 for r in receipts if isinstance(r, dict) and int(r.get("status", "0x0"), 16) == 1)
    return {"sampled": len(chosen), "succeeded": ok}


def _run(coroutine):
    # uvloop roughly halves the event loop's per-request cost; plain asyncio still works.
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def _status(args, message: str) -> None:
    if not args.quiet:
        print(f"blixt stress: {message}", file=sys.stderr, flush=True)


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value
