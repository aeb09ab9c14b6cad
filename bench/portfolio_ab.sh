#!/bin/bash
# Interleaved A/B of `bench/engine.py --portfolio`: a base revision (checked out in
# a temporary git worktree) and the working tree run alternately, PAIRS times
# each; prints every run and the medians, and the per-pair ratios (work / base).
# Alternating pairs is the only comparison this shared machine allows: the same
# code swings by 10-20 % within minutes.
#   bash bench/portfolio_ab.sh BASE_REV [PAIRS] [extra bench/engine.py args]
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${1:?base revision}
PAIRS=${2:-5}
shift $(( $# >= 2 ? 2 : 1 ))
PY=${PYTHON:-.venv/bin/python}
[[ "$PY" = /* ]] || PY=$(pwd)/$PY  # relative to the repository; an absolute PYTHON as given
WT=$(mktemp -d)
OUT=$(mktemp)
trap 'git worktree remove --force "$WT" >/dev/null 2>&1 || true; rm -f "$OUT"' EXIT
git worktree add -q --detach "$WT" "$BASE"
for i in $(seq "$PAIRS"); do
  for side in base work; do
    dir=$WT; [ "$side" = work ] && dir=$(pwd)
    (cd "$dir" && "$PY" bench/engine.py --portfolio "$@" | tail -1 | sed "s/^{/{\"side\": \"$side\", /") >> "$OUT"
  done
done
"$PY" bench/ab_summary.py "$OUT" base work
