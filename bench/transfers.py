"""Pre-signed transfers against a local node: accepted and included tx/s, inclusion
latency, CPU — single and batched JSON-RPC requests, several runs, medians.

    .venv/bin/python bench/transfers.py                    # anvil: 1 s blocks and automine
    .venv/bin/python bench/transfers.py --node blixt       # blixt devnet, with anvil 1 s blocks as baseline
    .venv/bin/python bench/transfers.py --runs 5 --count 50000 --batch 32

Every run starts a fresh node on a free loopback port, runs `python -m node.stress`
(the same code as `blixt stress`) as a separate process with `--node-pid`, and stops
the node (by PID). The table compares each configuration with the baseline measured
in the same invocation (ratio = configuration median / baseline median); the last
line of output is the whole result as JSON.

anvil comes from $ANVIL or /work/tools/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil
(`npm install @foundry-rs/anvil` there). It runs with --quiet (logging off, its best
case) and a 10-billion block gas limit unless the configuration says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ANVIL = os.environ.get("ANVIL", "/work/tools/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil")
HIGH_GAS_LIMIT = "10000000000"

# name → (kind, extra node arguments). anvil-1s-30m reproduces the figure
# (anvil's default 30M gas limit caps inclusion near 1,400 transfers/s).
CONFIGURATIONS = {
    "anvil-1s": ("anvil", ["--block-time", "1", "--gas-limit", HIGH_GAS_LIMIT]),
    "anvil-automine": ("anvil", ["--gas-limit", HIGH_GAS_LIMIT]),
    "anvil-1s-30m": ("anvil", ["--block-time", "1"]),
    "blixt": ("blixt", ["--ephemeral"]),
    "blixt-instant": ("blixt", ["--ephemeral", "--instant"]),
}
METRICS = (
    ("included_tx_per_s", "included/s"),
    ("accepted_tx_per_s", "accepted/s"),
    ("inclusion_p50_ms", "incl p50 ms"),
    ("inclusion_p99_ms", "incl p99 ms"),
    ("generator_cores", "gen cores"),
    ("node_cores", "node cores"),
    ("not_included", "not incl"),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--node", choices=("anvil", "blixt"), default="anvil", help="what to measure (default %(default)s)")
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGURATIONS), help="configurations to run (overrides --node)")
    parser.add_argument("--baseline", default="anvil-1s", help="configuration the ratios compare against; 'none' for no ratios")
    parser.add_argument("--runs", type=int, default=3, help="runs per configuration and mode (default %(default)s)")
    parser.add_argument("--count", type=int, default=20_000, help="transactions per run (default %(default)s)")
    parser.add_argument("--batch", type=int, default=16, help="transactions per batch in the batched mode (default %(default)s)")
    parser.add_argument("--connections", type=int, default=4, help="HTTP connections (default %(default)s)")
    parser.add_argument("--accounts", type=int, default=200, help="sender accounts (default %(default)s)")
    parser.add_argument("--stress-args", default="", help="extra arguments for the stress tester, as one string")
    args = parser.parse_args(argv)

    configs = args.configs or (["anvil-1s", "anvil-automine"] if args.node == "anvil" else ["blixt", "anvil-1s"])
    if args.baseline != "none" and args.baseline not in configs:
        configs.append(args.baseline)
    modes = {"single": 1, f"batch{args.batch}": args.batch}

    results: dict[str, dict[str, dict]] = {}
    raw_runs: dict[str, dict[str, list[dict]]] = {}
    for config in configs:
        for mode, batch in modes.items():
            runs = []
            for run in range(args.runs):
                print(f"# {config} {mode} run {run + 1}/{args.runs}", file=sys.stderr, flush=True)
                runs.append(measure(config, batch, args))
            raw_runs.setdefault(config, {})[mode] = runs
            results.setdefault(config, {})[mode] = medians(runs)

    ratios = {}
    if args.baseline != "none":
        base = results[args.baseline]
        for config in configs:
            if config == args.baseline:
                continue
            ratios[config] = {
                mode: {
                    key: _ratio(results[config][mode].get(key), base[mode].get(key))
                    for key in ("included_tx_per_s", "accepted_tx_per_s", "inclusion_p50_ms")
                }
                for mode in modes
            }
    print_table(results, ratios, args)
    print(json.dumps({
        "bench": "transfers",
        "count": args.count,
        "runs": args.runs,
        "connections": args.connections,
        "baseline": args.baseline,
        "medians": results,
        "ratios_vs_baseline": ratios,
        "runs_detail": raw_runs,
    }, separators=(",", ":")))
    return 0


def measure(config: str, batch: int, args) -> dict:
    kind, extra = CONFIGURATIONS[config]
    summary = run_stress(kind, extra, [
        "--count", str(args.count), "--batch", str(batch), "--connections", str(args.connections),
        "--accounts", str(args.accounts), *args.stress_args.split(),
    ], timeout=600)
    latency = summary.get("inclusion_latency_ms") or {}
    return {
        "included_tx_per_s": summary["rates"]["included_tx_per_s"],
        "accepted_tx_per_s": summary["rates"]["accepted_tx_per_s"],
        "inclusion_p50_ms": latency.get("p50"),
        "inclusion_p99_ms": latency.get("p99"),
        "generator_cores": summary["cpu"]["generator_core_share_sending"],
        "node_cores": summary["cpu"]["node_core_share_total"],
        "not_included": summary["transactions"]["accepted_not_included"],
        "errors": summary["transactions"]["errors"],
        "presign_tx_per_s": summary["presign"]["tx_per_s"],
    }


def run_stress(kind: str, extra: list[str], stress_args: list[str], timeout: float) -> dict:
    """Start a fresh node (`kind`: anvil or blixt), run `blixt stress` against it
    with `stress_args`, stop the node; the run's JSON summary."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    node = start_node(kind, port, extra)
    try:
        wait_ready(url, node)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "run.json"
            command = [sys.executable, "-m", "node.stress", "--rpc", url, *stress_args,
                       "--node-pid", str(node.pid), "--json", str(out), "--quiet", "--drain", "120"]
            done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
            if done.returncode != 0 or not out.exists():
                raise SystemExit(f"stress run failed ({done.returncode}):\n{done.stderr}")
            return json.loads(out.read_text())
    finally:
        stop_node(node)


def start_node(kind: str, port: int, extra: list[str]) -> subprocess.Popen:
    if kind == "anvil":
        if not Path(ANVIL).is_file():
            raise SystemExit(f"anvil not found at {ANVIL} (set $ANVIL)")
        command = [ANVIL, "--hardfork", "prague", "--host", "127.0.0.1", "--port", str(port), "--quiet", *extra]
    else:
        command = [sys.executable, "-m", "node.cli", "devnet", "--host", "127.0.0.1", "--port", str(port), *extra]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_ready(url: str, node: subprocess.Popen, timeout: float = 60) -> None:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}).encode()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node.poll() is not None:
            raise SystemExit(f"node exited with {node.returncode} before serving {url}")
        try:
            request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=1) as response:
                if "result" in json.load(response):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"node did not serve {url} within {timeout} s")


def stop_node(node: subprocess.Popen) -> None:
    node.terminate()
    try:
        node.wait(10)
    except subprocess.TimeoutExpired:
        node.kill()
        node.wait()


def medians(runs: list[dict]) -> dict:
    keys = runs[0].keys()
    out = {}
    for key in keys:
        values = [run[key] for run in runs if run.get(key) is not None]
        out[key] = round(statistics.median(values), 3) if values else None
    return out


def print_table(results: dict, ratios: dict, args) -> None:
    print(f"transfers: {args.count:,} pre-signed per run, {args.connections} connections, medians of {args.runs} runs")
    header = f"{'configuration':<16} {'mode':<8} " + " ".join(f"{label:>12}" for _, label in METRICS)
    print(header)
    for config, modes in results.items():
        for mode, values in modes.items():
            cells = " ".join(f"{_cell(values.get(key)):>12}" for key, _ in METRICS)
            print(f"{config:<16} {mode:<8} {cells}")
    for config, modes in ratios.items():
        for mode, values in modes.items():
            text = ", ".join(f"{key.replace('_tx_per_s', '')} ×{value}" for key, value in values.items() if value is not None)
            print(f"ratio {config} / {args.baseline} [{mode}]: {text}")


def _cell(value) -> str:
    if value is None:
        return "—"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"


def _ratio(value, base):
    if value is None or not base:
        return None
    return round(value / base, 2)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    sys.exit(main())
