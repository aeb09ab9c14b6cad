"""Prometheus metrics of the node, served on /metrics (names in docs/metrics.md).

Label children are bound once (PERFORMANCE.md: `labels()` costs 0.9 µs a call, a bound
child's observe 0.45 µs); per-transaction work is one counter add per mini-block, not
one per transaction.
"""
from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_FAST = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
_INTERVAL = (0.002, 0.005, 0.008, 0.01, 0.012, 0.015, 0.02, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0)
_RPC = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0, 5.0)


class NodeMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.miniblock_interval = Histogram(
            "blixt_miniblock_interval_seconds", "Time between consecutive non-empty mini-blocks",
            buckets=_INTERVAL, registry=r)
        self.miniblock_build = Histogram(
            "blixt_miniblock_build_seconds", "Time to execute and write one mini-block",
            buckets=_FAST, registry=r)
        self.block_interval = Histogram(
            "blixt_block_interval_seconds", "Time between consecutive sealed blocks",
            buckets=_INTERVAL, registry=r)
        self.block_seal = Histogram(
            "blixt_block_seal_seconds", "Time to seal a block (roots, header, store write)",
            buckets=_FAST, registry=r)
        self.transactions = Counter(
            "blixt_transactions_total", "Transactions executed (included in a mini-block)", registry=r)
        self.miniblocks = Counter("blixt_miniblocks_total", "Mini-blocks executed", registry=r)
        self.blocks = Counter("blixt_blocks_total", "Blocks sealed", registry=r)
        self.block_gas = Histogram(
            "blixt_block_gas_used", "Gas used per sealed block",
            buckets=(0, 21_000, 210_000, 2_100_000, 21_000_000, 210_000_000, 2_100_000_000, 10_000_000_000),
            registry=r)
        self.head = Gauge("blixt_head_block_number", "Number of the latest sealed block", registry=r)
        self.mempool = Gauge("blixt_mempool_transactions", "Transactions waiting in the mempool", registry=r)
        self.preconfirmation = Histogram(
            "blixt_preconfirmation_latency_seconds",
            "From a transaction's arrival to its mini-block's preconfirmation",
            buckets=_FAST, registry=r)
        self.rpc_latency = Histogram(
            "blixt_rpc_request_seconds", "JSON-RPC call latency by method", ["method"],
            buckets=_RPC, registry=r)
        self.rpc_errors = Counter(
            "blixt_rpc_errors_total", "JSON-RPC calls answered with an error, by method and code",
            ["method", "code"], registry=r)
        self.ws_subscribers = Gauge(
            "blixt_ws_subscriptions", "Open WebSocket subscriptions", registry=r)
        self.store_write = Histogram(
            "blixt_store_write_seconds", "LevelDB write-batch time (mini-block WAL and block seals)",
            buckets=_FAST, registry=r)
        self.exchange_latency = Histogram(
            "blixt_exchange_command_seconds", "Exchange engine time per command, by command kind",
            ["kind"], buckets=_RPC, registry=r)
        self.exchange_rejected = Counter(
            "blixt_exchange_rejected_total", "Exchange commands rejected by the engine, by kind",
            ["kind"], registry=r)
        self.orders = Counter(
            "blixt_orders_total", "Orders accepted by the exchange (placed, incl. in batches)", registry=r)
        self.fills = Counter("blixt_exchange_fills_total", "Trades (fills) matched by the exchange", registry=r)
        self.open_orders = Gauge(
            "blixt_exchange_open_orders", "Orders resting on the book, by market", ["market"], registry=r)
        self._rpc_children: dict[str, object] = {}
        self._exchange_children: dict[str, tuple] = {}
        self._last_miniblock = None
        self._last_block = None

    # -- hooks ---------------------------------------------------------------------------

    def miniblock(self, tx_count: int, seconds: float, txs) -> None:
        now = time.perf_counter()
        if self._last_miniblock is not None:
            self.miniblock_interval.observe(now - self._last_miniblock)
        self._last_miniblock = now
        self.miniblock_build.observe(seconds)
        self.miniblocks.inc()
        self.transactions.inc(tx_count)
        now_ns = time.perf_counter_ns()
        observe = self.preconfirmation.observe
        # Sample at most 64 latencies per mini-block: bounded cost at any load.
        step = max(1, tx_count // 64)
        for tx in txs[::step]:
            if tx.arrival_ns:
                observe((now_ns - tx.arrival_ns) / 1e9)

    def block(self, sealed, seconds: float) -> None:
        now = time.perf_counter()
        if self._last_block is not None:
            self.block_interval.observe(now - self._last_block)
        self._last_block = now
        self.block_seal.observe(seconds)
        self.blocks.inc()
        self.block_gas.observe(sealed.header.gas_used)
        self.head.set(sealed.header.number)

    def rpc(self, method: str, seconds: float, code: int | None) -> None:
        child = self._rpc_children.get(method)
        if child is None:
            child = self._rpc_children[method] = self.rpc_latency.labels(method)
        child.observe(seconds)
        if code is not None:
            self.rpc_errors.labels(method, str(code)).inc()

    def exchange_command(self, kind: str, seconds: float, events, accepted: bool) -> None:
        """Observer of the exchange precompile: one call per command it ran."""
        children = self._exchange_children.get(kind)
        if children is None:
            children = self._exchange_children[kind] = (
                self.exchange_latency.labels(kind), self.exchange_rejected.labels(kind))
        children[0].observe(seconds)
        if not accepted:
            children[1].inc()
            return
        orders = fills = 0
        for event in events:
            name = event.__class__.__name__
            if name == "OrderAccepted":
                orders += 1
            elif name == "Fill":
                fills += 1
        if orders:
            self.orders.inc(orders)
        if fills:
            self.fills.inc(fills)

    def watch_exchange(self, runtime) -> None:
        """Open orders per market, read from the books when Prometheus scrapes."""
        for market in runtime.engine.config.markets:
            self.open_orders.labels(market.symbol).set_function(
                lambda m=market.id: runtime.open_order_count(m))

    def render(self) -> tuple[str, bytes]:
        return CONTENT_TYPE_LATEST, generate_latest(self.registry)
