#!/bin/bash
# Interleaved A/B of `bench/engine.py --portfolio` under two Python interpreters
# (the same code): PY_A and PY_B run alternately, PAIRS times each; prints every
# run, the medians and the per-pair ratios (B / A). The interpreter's build
# matters as much as a week of engine work: a CPython built without PGO/LTO
# (pyenv's default) runs this benchmark ~10-20 % slower than a distribution's
# (Debian's python3 is built with both) - see docs/benchmarks.md.
#   bash bench/python_ab.sh PY_A PY_B [PAIRS] [extra bench/engine.py args]
# Each interpreter needs the benchmark's one dependency (sortedcontainers): a venv
# made with it and `pip install sortedcontainers==2.4.0` (or `./dev test`'s).
set -euo pipefail
cd "$(dirname "$0")/.."
PY_A=${1:?python A}
PY_B=${2:?python B}
PAIRS=${3:-4}
shift $(( $# >= 3 ? 3 : 2 ))
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
for i in $(seq "$PAIRS"); do
  for side in A B; do
    py=$PY_A; [ "$side" = B ] && py=$PY_B
    "$py" bench/engine.py --portfolio "$@" | tail -1 | sed "s/^{/{\"side\": \"$side\", /" >> "$OUT"
  done
done
"$PY_A" bench/ab_summary.py "$OUT" A B "A ($PY_A)" "B ($PY_B)"
