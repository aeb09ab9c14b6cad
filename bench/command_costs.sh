#!/bin/bash
# Instructions of one command of a kind on the portfolio benchmark's state
# (bench/command_costs.py KIND N under valgrind, N1 and N2 commands, differenced:
# set-up cancels out). Where bench/instructions.sh gives the whole run's figure
# per command, this says which kinds and which parts of the check it is made of.
#   bash bench/command_costs.sh [KIND ...]   (default: all kinds; ~20 s a kind)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
N1=${N1:-1000}
N2=${N2:-5000}
KINDS=${*:-perp spot cancel-perp cancel-spot deposit check portfolio available}
ir() {
  valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null \
    "$PY" bench/command_costs.py "$1" "$2" 2>&1 | awk '/I[[:space:]]+refs:/ {gsub(",", "", $4); print $4}'
}
for kind in $KINDS; do
  a=$(ir "$kind" "$N1")
  b=$(ir "$kind" "$N2")
  echo "$kind: $(( (b - a) / (N2 - N1) )) instructions per command"
done
