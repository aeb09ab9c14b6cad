"""Chain benchmark: included transfers/s, mini-block interval and seal time under load,
and eth_sendRawTransactionSync round trip — against a fresh `blixt devnet` per run.

    python bench/chain.py [--runs 3] [--count 30000] [--duration 20]

Each run starts an ephemeral devnet, sends pre-signed transfers with `blixt stress`
(single requests at 3,000 tx/s, then single requests and batches of 16 as fast as
possible, then a 500 tx/s sync run), and reads the node's
/metrics histograms. Prints a table and, last, one JSON line with the medians.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import Devnet  # noqa: E402  (the same launcher the tests use)


def scrape_histogram(url: str, name: str) -> list[tuple[float, float]]:
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    for family in text_string_to_metric_families(text):
        if family.name == name:
            return [(float(s.labels["le"]), s.value) for s in family.samples if s.name.endswith("_bucket")]
    return []


def bucket_delta(before, after):
    b = dict(before)
    return [(le, count - b.get(le, 0)) for le, count in after]


def quantile_upper_bound(buckets, q: float) -> float:
    """The smallest bucket bound below which at least q of the observations fall."""
    total = buckets[-1][1] if buckets else 0
    for le, count in buckets:
        if total and count >= q * total:
            return le
    return float("inf")


def stress(url: str, pid: int, *args: str) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        path = f.name
    cmd = [sys.executable, "-m", "node.stress", "--rpc", url, "--quiet", "--json", path, *args]
    subprocess.run(cmd, cwd=ROOT, check=True, timeout=600, stdout=subprocess.DEVNULL)
    data = json.loads(Path(path).read_text())
    os.unlink(path)
    return data


def one_run(count: int, duration: int) -> dict:
    node = Devnet()
    try:
        out = {}
        modes = (("rate3000", ["--connections", "8", "--rate", "3000"]),
                 ("single", ["--connections", "8"]),
                 ("batch16", ["--batch", "16", "--connections", "4"]))
        for label, extra in modes:
            mb_before = scrape_histogram(node.url, "blixt_miniblock_interval_seconds")
            seal_before = scrape_histogram(node.url, "blixt_block_seal_seconds")
            result = stress(node.url, node.proc.pid, "--count", str(count), "--duration", str(duration), *extra)
            mb = bucket_delta(mb_before, scrape_histogram(node.url, "blixt_miniblock_interval_seconds"))
            seal = bucket_delta(seal_before, scrape_histogram(node.url, "blixt_block_seal_seconds"))
            out[label] = {
                "accepted_per_s": result["rates"]["accepted_tx_per_s"],
                "included_per_s": result["rates"]["included_tx_per_s"],
                "inclusion_p50_ms": result["inclusion_latency_ms"]["p50"],
                "inclusion_p99_ms": result["inclusion_latency_ms"]["p99"],
                "miniblock_interval_p99_le_s": quantile_upper_bound(mb, 0.99),
                "miniblock_interval_share_le_15ms": (dict(mb).get(0.015, 0) / mb[-1][1]) if mb and mb[-1][1] else None,
                "seal_p99_le_s": quantile_upper_bound(seal, 0.99),
            }
        result = stress(node.url, node.proc.pid, "--sync", "--rate", "500", "--count", "5000", "--duration", "10",
                        "--connections", "32")  # enough that no connection waits on another
        out["sync500"] = {"round_trip_p50_ms": result["sync_round_trip_ms"]["p50"],
                          "round_trip_p99_ms": result["sync_round_trip_ms"]["p99"]}
        return out
    finally:
        node.stop()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--count", type=int, default=30000)
    parser.add_argument("--duration", type=int, default=20)
    args = parser.parse_args()
    runs = [one_run(args.count, args.duration) for _ in range(args.runs)]
    medians = {}
    for section in runs[0]:
        medians[section] = {key: statistics.median(r[section][key] for r in runs) for key in runs[0][section]}
    for section, values in medians.items():
        print(f"{section:10s} " + "  ".join(f"{k}={v:.4g}" for k, v in values.items()))
    print(json.dumps({"runs": args.runs, "medians": medians}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
