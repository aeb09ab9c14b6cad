"""The run summary: one dict (written as JSON with `--json`) and its table.

Rates are over explicit windows, all from the first write:
- accepted tx/s: transactions the node said OK to / (last answer − first send)
- included tx/s: our transactions seen in blocks / (last inclusion − first send)
- send tx/s: transactions written / (last send − first send)
Latencies are in milliseconds, nearest-rank percentiles.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .stats import distribution

if TYPE_CHECKING:
    from .runner import LoadRun
    from .setup import Preparation

SUMMARY_VERSION = 1


def build_summary(config: dict, preparation: "Preparation", run: "LoadRun", presign: dict, receipts: dict,
                  outcomes: dict | None = None) -> dict:
    first = run.t_first_send
    sent = run.n_tx - run.unsent
    latencies = []
    if not run.options.sync:
        batch = run.batch
        for index in range(run.n_tx):
            included = run.included_at[index]
            if included == included:
                latencies.append(included - run.sent_at[index // batch])
    else:
        latencies = run.sync_latencies
    window_blocks = [b for b in run.blocks if not math.isnan(first) and b[2] >= first]
    return {
        "version": SUMMARY_VERSION,
        "config": config,
        "node": {
            "client_version": preparation.client_version,
            "chain_id": preparation.chain_id,
            "start_block": preparation.start_block,
            "base_fee_at_start": preparation.base_fee,
            "block_gas_limit": preparation.block_gas_limit,
        },
        "fees": {
            "max_fee_per_gas": preparation.fees.max_fee_per_gas,
            "max_priority_fee_per_gas": preparation.fees.max_priority_fee_per_gas,
        },
        "setup": {"seconds": round(preparation.setup_seconds, 3), "senders": len(preparation.senders), **preparation.notes},
        "presign": presign,
        "transactions": {
            "planned": run.n_tx,
            "sent": sent,
            "unsent": run.unsent,
            "accepted": run.accepted_count,
            "included": run.included_count,
            "errors": run.error_count,
            # Accepted but never seen in a block before the run ended (stranded in
            # the node's pool, or the drain timed out). Not meaningful with --sync.
            "accepted_not_included": 0 if run.options.sync or run.options.watch == "none" else run.accepted_count - run.included_count,
        },
        "rates": {
            "send_tx_per_s": _rate(sent, run.t_last_send - first),
            "accepted_tx_per_s": _rate(run.accepted_count, run.t_last_answer - first),
            "included_tx_per_s": _rate(run.included_count, run.t_last_inclusion - first),
        },
        "windows_s": {
            "sending": _round(run.t_last_send - first),
            "last_answer": _round(run.t_last_answer - first),
            "last_inclusion": _round(run.t_last_inclusion - first),
            "total": _round(run.t_end - run.t_start),
        },
        "inclusion_latency_ms" if not run.options.sync else "sync_round_trip_ms": distribution(latencies, 1000.0, 2),
        "schedule_lag_ms": distribution(run.schedule_lag, 1000.0, 2) if run.options.rate else None,
        "errors_by_reason": dict(run.errors.most_common()),
        "blocks": block_summary(window_blocks),
        "receipts_sampled": receipts,
        # Workloads whose reverts are outcomes (orders): every included receipt by status.
        "receipt_outcomes": outcomes,
        "cpu": run.cpu,
        "connections_reopened": run.reconnects,
        "notes": [note for note in (run.watch_error, *run.notes) if note],
    }


def block_summary(blocks: list[tuple[int, int, float, int, int]]) -> dict | None:
    """Block cadence as the node stamps it (timestamps, seconds) and as observed
    (arrival of each new block; several blocks seen in one poll count once)."""
    if not blocks:
        return None
    stamps = [b[1] for b in blocks]
    stamp_gaps = [later - earlier for earlier, later in zip(stamps, stamps[1:])]
    arrivals = sorted({b[2] for b in blocks})
    arrival_gaps = [later - earlier for earlier, later in zip(arrivals, arrivals[1:])]
    tx_counts = [b[4] for b in blocks]
    return {
        "count": len(blocks),
        "first": blocks[0][0],
        "last": blocks[-1][0],
        "timestamp_interval_s": distribution(stamp_gaps, 1.0, 3),
        "observed_interval_ms": distribution(arrival_gaps, 1000.0, 2),
        "transactions_per_block": distribution(tx_counts, 1.0, 1),
        "empty_blocks": sum(1 for count in tx_counts if count == 0),
    }


def format_table(summary: dict) -> str:
    tx = summary["transactions"]
    rates = summary["rates"]
    config = summary["config"]
    lines = [
        f"blixt stress — {config['workload']} → {config['rpc']} ({summary['node']['client_version']}, chain {summary['node']['chain_id']})",
        f"  mode            {'sync (EIP-7966)' if config['sync'] else 'async'}, batch {config['batch']}, "
        f"{config['connections']} connection(s) × {config['inflight']} in flight, "
        f"rate {config['rate'] or 'max'}, senders {summary['setup']['senders']}",
        f"  pre-signed      {summary['presign']['transactions']:,} in {summary['presign']['seconds']:.2f} s "
        f"({summary['presign']['tx_per_s']:,.0f}/s, {summary['presign']['processes']} process(es))",
        f"  transactions    sent {tx['sent']:,}  accepted {tx['accepted']:,}  included {tx['included']:,}  "
        f"errors {tx['errors']:,}  unsent {tx['unsent']:,}  not included {tx['accepted_not_included']:,}",
        f"  throughput      send {_fmt(rates['send_tx_per_s'])}/s  accepted {_fmt(rates['accepted_tx_per_s'])}/s  "
        f"included {_fmt(rates['included_tx_per_s'])}/s",
    ]
    latency_key = "sync_round_trip_ms" if config["sync"] else "inclusion_latency_ms"
    latency = summary.get(latency_key)
    label = "round trip" if config["sync"] else "inclusion"
    lines.append(f"  {label:<15} {_dist(latency, 'ms')}")
    if summary.get("schedule_lag_ms"):
        lines.append(f"  schedule lag    {_dist(summary['schedule_lag_ms'], 'ms')}")
    blocks = summary.get("blocks")
    if blocks:
        lines.append(
            f"  blocks          {blocks['count']:,} (#{blocks['first']}–#{blocks['last']}), "
            f"txs/block mean {blocks['transactions_per_block']['mean']:,} max {blocks['transactions_per_block']['max']:,.0f}"
        )
        lines.append(f"  block interval  stamped {_dist(blocks['timestamp_interval_s'], 's')}")
        lines.append(f"                  observed {_dist(blocks['observed_interval_ms'], 'ms')}")
    receipts = summary.get("receipts_sampled") or {}
    if receipts.get("sampled"):
        lines.append(f"  receipts        {receipts['succeeded']}/{receipts['sampled']} sampled succeeded")
    outcomes = summary.get("receipt_outcomes")
    if outcomes:
        lines.append(
            f"  {outcomes['of']:<15} {outcomes['succeeded']:,} accepted (status 1), {outcomes['reverted']:,} reverted "
            f"(status 0) of {outcomes['checked']:,} included"
            + ("" if outcomes["complete"] else f" (checked {outcomes['checked']:,} of {outcomes['included']:,})")
        )
    cpu = summary["cpu"]
    node_share = cpu.get("node_core_share_sending")
    lines.append(
        f"  cpu (cores)     generator {_fmt(cpu.get('generator_core_share_sending'), 2)} while sending, "
        f"{_fmt(cpu.get('generator_core_share_total'), 2)} overall"
        + (f"; node {_fmt(node_share, 2)} while sending, {_fmt(cpu.get('node_core_share_total'), 2)} overall" if node_share is not None else "")
    )
    if summary["errors_by_reason"]:
        lines.append("  errors by reason")
        for reason, count in summary["errors_by_reason"].items():
            lines.append(f"    {count:>9,}  {reason}")
    for note in summary.get("notes") or []:
        lines.append(f"  note            {note}")
    return "\n".join(lines)


def _rate(count: int, seconds: float) -> float | None:
    if not count or seconds != seconds or seconds <= 0:
        return None
    return round(count / seconds, 1)


def _round(value: float) -> float | None:
    return None if value != value else round(value, 3)


def _fmt(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _dist(summary: dict | None, unit: str) -> str:
    if not summary:
        return "—"
    return (
        f"p50 {summary['p50']:,} p90 {summary['p90']:,} p99 {summary['p99']:,} max {summary['max']:,} {unit}"
        f" (n={summary['count']:,})"
    )
