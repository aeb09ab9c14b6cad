"""Summary of an interleaved A/B of `bench/engine.py --portfolio` (bench/portfolio_ab.sh,
bench/python_ab.sh): one JSON line per run, each with a "side"; prints each figure's
runs and median per side, then the per-pair ratios of commands_per_s (second side /
first).
    python bench/ab_summary.py RUNS_FILE SIDE_A SIDE_B [LABEL_A LABEL_B]"""

import json
import statistics
import sys

KEYS = ("commands_per_s", "commands_per_s_without_ticks", "tick_ms_p50", "p99_us",
        "oracle_update_ms_10k_accounts")


def main() -> None:
    path, a, b = sys.argv[1:4]
    labels = sys.argv[4:6] or [a, b]
    with open(path) as f:
        rows = [json.loads(line) for line in f]
    for side, label in zip((a, b), labels):
        r = [x for x in rows if x["side"] == side]
        for key in KEYS:
            values = [x[key] for x in r if key in x]
            if values:
                print(f"{label} {key}: median {statistics.median(values)} runs {values}")
    first = [x["commands_per_s"] for x in rows if x["side"] == a]
    second = [x["commands_per_s"] for x in rows if x["side"] == b]
    ratios = [round(y / x, 3) for x, y in zip(first, second)]
    print(f"pair ratios {b}/{a} {ratios}, median {statistics.median(ratios)}")


if __name__ == "__main__":
    main()
