"""Order flow: Blixt's exchange precompile versus a Solidity order book on anvil.

    .venv/bin/python bench/orders.py                  # 3 runs each, single + batched requests
    .venv/bin/python bench/orders.py --runs 5 --modes single

Configurations (a fresh node per run, on a free loopback port, stopped by PID):

    blixt-orders   `blixt devnet` (default cadence: 10 ms mini-blocks, 1 s blocks) with
                   `-w orders`: the market-making flow through the precompile at 0x…0800
    anvil-sol      anvil --hardfork prague, 1 s blocks, 10-billion gas limit, with
                   `-w orderbook-sol`: the same flow on bench/contracts/OrderBook.sol
    blixt-sol      `blixt devnet` with `-w orderbook-sol`: the EVM path (py-evm), for reference

Runs go in rounds (every configuration once per round) so that load drift on a
shared machine does not favour one configuration. Each run is `python -m node.stress` (the same code as `blixt stress`) as a separate
process with `--node-pid`, `--count` and `--duration` bounds. The flow (precompiles/
stress.py): 60 % resting limit orders, 20 % crossing IOC orders that fill, 20 %
cancels by client order id. Every included receipt is read afterwards; a run with a
reverted order is flagged. The table shows medians; ratios compare each configuration
with anvil-sol measured in the same invocation; the last line is the result as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from transfers import HIGH_GAS_LIMIT, _cell, _ratio, run_stress  # noqa: E402

# name → (node kind, node arguments, workload, default count). The EVM path is an
# order of magnitude slower, so it gets fewer orders (its run still lasts seconds).
CONFIGURATIONS = {
    "blixt-orders": ("blixt", ["--ephemeral"], "orders", 20_000),
    "anvil-sol": ("anvil", ["--block-time", "1", "--gas-limit", HIGH_GAS_LIMIT], "orderbook-sol", 20_000),
    "blixt-sol": ("blixt", ["--ephemeral"], "orderbook-sol", 3_000),
}
BASELINE = "anvil-sol"
METRICS = (
    ("included_per_s", "included/s"),
    ("accepted_per_s", "accepted/s"),
    ("inclusion_p50_ms", "incl p50 ms"),
    ("inclusion_p99_ms", "incl p99 ms"),
    ("generator_cores", "gen cores"),
    ("node_cores", "node cores"),
    ("reverted", "reverted"),
    ("not_included", "not incl"),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGURATIONS), default=list(CONFIGURATIONS))
    parser.add_argument("--runs", type=int, default=3, help="runs per configuration and mode (default %(default)s)")
    parser.add_argument("--count", type=int, help="orders per run (default: per configuration, 20,000 / 3,000 on the EVM path)")
    parser.add_argument("--duration", type=float, default=60.0, help="bound on each run's sending, seconds (default %(default)s)")
    parser.add_argument("--modes", nargs="+", choices=("single", "batch"), default=["single", "batch"])
    parser.add_argument("--batch", type=int, default=16, help="orders per JSON-RPC batch in the batch mode (default %(default)s)")
    parser.add_argument("--connections", type=int, default=4, help="HTTP connections (default %(default)s)")
    parser.add_argument("--accounts", type=int, default=200, help="sender accounts (default %(default)s)")
    args = parser.parse_args(argv)
    configs = list(args.configs)
    if BASELINE not in configs:
        configs.append(BASELINE)
    modes = {("single" if m == "single" else f"batch{args.batch}"): (1 if m == "single" else args.batch) for m in args.modes}

    # Rounds: each round runs every configuration and mode once, so a load drift on
    # the shared machine spreads over all of them instead of biasing the last ones.
    detail: dict[str, dict[str, list[dict]]] = {c: {m: [] for m in modes} for c in configs}
    for run in range(args.runs):
        for config in configs:
            for mode, batch in modes.items():
                print(f"# round {run + 1}/{args.runs}: {config} {mode}", file=sys.stderr, flush=True)
                result = measure(config, batch, args)
                detail[config][mode].append(result)
                print(f"#   included {result['included_per_s']} orders/s, reverted {result['reverted']}",
                      file=sys.stderr, flush=True)
    results = {c: {m: medians(runs) for m, runs in by_mode.items()} for c, by_mode in detail.items()}

    ratios = {
        config: {mode: {key: _ratio(results[config][mode].get(key), results[BASELINE][mode].get(key))
                        for key in ("included_per_s", "accepted_per_s")} for mode in modes}
        for config in configs if config != BASELINE
    }
    print_table(results, ratios, args)
    print(json.dumps({
        "bench": "orders",
        "runs": args.runs,
        "connections": args.connections,
        "accounts": args.accounts,
        "counts": {c: args.count or CONFIGURATIONS[c][3] for c in configs},
        "baseline": BASELINE,
        "medians": results,
        "ratios_vs_baseline": ratios,
        "runs_detail": detail,
    }, separators=(",", ":")))
    return 0


def measure(config: str, batch: int, args) -> dict:
    kind, extra, workload, default_count = CONFIGURATIONS[config]
    count = args.count or default_count
    summary = run_stress(kind, extra, [
        "--workload", workload, "--count", str(count), "--duration", str(args.duration),
        "--batch", str(batch), "--connections", str(args.connections), "--accounts", str(args.accounts),
    ], timeout=args.duration + 480)
    latency = summary.get("inclusion_latency_ms") or {}
    outcomes = summary.get("receipt_outcomes") or {}
    return {
        "included_per_s": summary["rates"]["included_tx_per_s"],
        "accepted_per_s": summary["rates"]["accepted_tx_per_s"],
        "inclusion_p50_ms": latency.get("p50"),
        "inclusion_p99_ms": latency.get("p99"),
        "generator_cores": summary["cpu"]["generator_core_share_sending"],
        "node_cores": summary["cpu"]["node_core_share_total"],
        "sent": summary["transactions"]["sent"],
        "included": summary["transactions"]["included"],
        "not_included": summary["transactions"]["accepted_not_included"],
        "errors": summary["transactions"]["errors"],
        "succeeded": outcomes.get("succeeded"),
        "reverted": outcomes.get("reverted"),
    }


def medians(runs: list[dict]) -> dict:
    out = {}
    for key in runs[0]:
        values = [run[key] for run in runs if run.get(key) is not None]
        out[key] = round(statistics.median(values), 3) if values else None
    return out


def print_table(results: dict, ratios: dict, args) -> None:
    print(f"orders: market-making flow, {args.connections} connections, {args.accounts} senders, "
          f"medians of {args.runs} runs (counts: " + ", ".join(
              f"{c} {args.count or CONFIGURATIONS[c][3]:,}" for c in results) + ")")
    print(f"{'configuration':<14} {'mode':<8} " + " ".join(f"{label:>12}" for _, label in METRICS))
    for config, modes in results.items():
        for mode, values in modes.items():
            print(f"{config:<14} {mode:<8} " + " ".join(f"{_cell(values.get(key)):>12}" for key, _ in METRICS))
    for config, modes in ratios.items():
        for mode, values in modes.items():
            text = ", ".join(f"{key.replace('_per_s', '')} ×{value}" for key, value in values.items() if value is not None)
            print(f"ratio {config} / {BASELINE} [{mode}]: {text}")


if __name__ == "__main__":
    sys.exit(main())
