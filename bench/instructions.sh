#!/bin/bash
# Instructions per command of `bench/engine.py --portfolio`, counted by valgrind
# (cachegrind without cache simulation): a figure this shared, noisy machine
# cannot move, for A/B comparisons of engine changes where wall-clock medians
# swing by 10-20 % between runs. It runs the benchmark twice, with N1 and N2
# commands (the same stream prefix), and prints (Ir(N2) - Ir(N1)) / (N2 - N1):
# set-up, the stream's generation and the oracle phase cancel out (the stream's
# generation for the extra commands stays in, about the same for both sides).
#   bash bench/instructions.sh [N1 N2]      (default 10000 40000; ~40 s)
# Needs valgrind (apt install valgrind). CPython-level instruction counts do not
# weigh cache misses, so a change can gain more (or less) wall-clock time than Ir.
set -euo pipefail
cd "$(dirname "$0")/.."
N1=${1:-10000}
N2=${2:-40000}
PY=${PYTHON:-.venv/bin/python}
ir() {
  valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null \
    "$PY" bench/engine.py --portfolio --oracle-accounts 100 --commands "$1" 2>&1 \
    | awk '/I[[:space:]]+refs:/ {gsub(",", "", $4); print $4}'
}
a=$(ir "$N1")
b=$(ir "$N2")
echo "instructions per command: $(( (b - a) / (N2 - N1) )) (commands $N1..$N2)"
