"""The arithmetic of a stress run: percentiles, the open-loop schedule, error
grouping and CPU shares. Pure functions (plus two /proc readers) so tests can pin
them down without a node.
"""

from __future__ import annotations

import math
import os
import re
import resource
from typing import Iterable, Sequence

PERCENTILES = (50, 90, 99)


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending sequence: the smallest value with at
    least p % of the values at or below it (p50 of [1, 2, 3, 4] is 2). No
    interpolation, so every reported figure is one that was observed."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0 < p <= 100:
        raise ValueError(f"percentile {p} outside (0, 100]")
    rank = math.ceil(p / 100 * len(sorted_values))
    return sorted_values[max(rank, 1) - 1]


def distribution(values: Iterable[float], scale: float = 1.0, digits: int = 3) -> dict | None:
    """count, mean, p50/p90/p99 and max of `values` × `scale`; None when empty."""
    ordered = sorted(values)
    if not ordered:
        return None
    summary = {"count": len(ordered), "mean": round(sum(ordered) / len(ordered) * scale, digits)}
    for p in PERCENTILES:
        summary[f"p{p}"] = round(percentile(ordered, p) * scale, digits)
    summary["max"] = round(ordered[-1] * scale, digits)
    return summary


def due_count(elapsed: float, rate: float | None, total: int) -> int:
    """How many sends an open-loop schedule at `rate` per second has released after
    `elapsed` seconds: transaction i is due at i / rate, so floor(elapsed × rate) + 1
    have come due (the first at t = 0). None or 0 means as fast as possible: all."""
    if not rate:
        return total
    if elapsed < 0:
        return 0
    return min(total, int(elapsed * rate) + 1)


def scheduled_time(index: int, rate: float | None) -> float:
    """Offset from the start at which send `index` is due (0 without a rate)."""
    return index / rate if rate else 0.0


_HEX_RUN = re.compile(r"0x[0-9a-fA-F]+")
_NUMBER = re.compile(r"\d+")


def error_reason(error: object) -> str:
    """Group key for a JSON-RPC error: its message with hex strings and numbers
    replaced, so "nonce too low: next nonce 5, tx nonce 3" and "... 7, ... 4" count
    as one reason. Non-dict errors (transport failures) are kept as their text."""
    code = None
    if isinstance(error, dict):
        code = error.get("code")
        text = str(error.get("message", "")).strip() or "(no message)"
    else:
        text = str(error)
    # Hex first (through a placeholder, so its leading 0 is not taken for a number).
    text = _NUMBER.sub("N", _HEX_RUN.sub("\x00", text)).replace("\x00", "0x…")[:200]
    return f"{text} [code {code}]" if code is not None else text


def own_cpu_seconds() -> float:
    """CPU (user + system) this process has used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process from /proc/PID/stat; None if it is gone or this
    is not Linux."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read()
    except OSError:
        return None
    # The command name (field 2) may contain spaces or parentheses: split after it.
    fields = text[text.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (a node may recover signatures in child processes)."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return [pid]
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                text = stat.read()
        except OSError:
            continue
        parent = int(text[text.rindex(b")") + 2 :].split()[1])
        children.setdefault(parent, []).append(int(entry))
    tree, stack = [], [pid]
    while stack:
        current = stack.pop()
        tree.append(current)
        stack.extend(children.get(current, ()))
    return tree


def tree_cpu_seconds(pids: Sequence[int]) -> float | None:
    total, seen = 0.0, False
    for pid in pids:
        cpu = process_cpu_seconds(pid)
        if cpu is not None:
            total += cpu
            seen = True
    return total if seen else None
