"""The producer: the mini-block and block cadences, the write-ahead log, preconfirmations.

    ready txs ──► mini-block (every ~10 ms when there is work): execute in arrival
                  order, WAL write, then preconfirm (receipts visible, waiters woken,
                  `miniBlocks`/`logs` subscribers told)
    block time ─► seal (every ~1 s): header + roots, one atomic store batch that also
                  retires the block's WAL entries; `newHeads` subscribers told

A receipt is returned to nobody before its mini-block is in the WAL, so a kill -9 loses
no preconfirmed transaction; acknowledged-but-unexecuted transactions are in the store's
`p` keys, written before eth_sendRawTransaction answers.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from rusty_rlp import encode_raw

from node.chain.blocks import Receipt, encode
from node.chain.chain import Chain, SealedBlock
from node.chain.execution import TxInvalid
from node.chain.store import num8
from node.chain.transactions import SignedTx
from sequencer.mempool import Mempool, PoolError

log = logging.getLogger("blixt.sequencer")

WAL_OPEN, WAL_MINIBLOCK, WAL_DEV = 0, 1, 2


class Producer:
    def __init__(self, chain: Chain, pool: Mempool, config, metrics=None) -> None:
        self.chain = chain
        self.pool = pool
        self.kv = chain.store.kv
        seq = config.sequencer
        self.instant = seq.instant
        self.miniblock_interval = seq.miniblock_interval_ms / 1000
        self.block_time = seq.block_time_ms / 1000
        self.max_miniblock_txs = seq.max_miniblock_txs
        self.miniblock_budget = seq.miniblock_budget_ms / 1000
        self.metrics = metrics
        self.wal_seq = 0
        self.wal_keys: list[bytes] = []
        self.waiters: dict[bytes, list[asyncio.Future]] = {}
        self.stalled: set[bytes] = set()
        # Subscribers: callables told about each preconfirmed mini-block / sealed block.
        self.on_miniblock: list[Callable] = []
        self.on_block: list[Callable] = []
        self.on_pending_tx: list[Callable] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._last_miniblock = 0.0
        self._block_deadline = 0.0
        self._flush_lock = asyncio.Lock()
        self.paused = False  # evm_mine-driven (block time 0 / --no-mining)

    # -- ingress ------------------------------------------------------------------------

    def submit(self, tx: SignedTx) -> None:
        """Admit an acknowledged transaction; durable before this returns."""
        replaced = self.pool.add(tx)
        puts = [(b"p" + tx.hash, tx.raw)]
        deletes = [b"p" + replaced.hash] if replaced is not None else []
        self.kv.write(puts, deletes)
        if replaced is not None:
            self._resolve(replaced.hash, PoolError("replaced by a transaction with a higher fee"))
        for notify in self.on_pending_tx:
            notify(tx)
        self._wake.set()

    def wait_for(self, tx_hash: bytes) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self.waiters.setdefault(tx_hash, []).append(fut)
        return fut

    def _resolve(self, tx_hash: bytes, outcome) -> None:
        futures = self.waiters.pop(tx_hash, None)
        if not futures:
            return
        for fut in futures:
            if not fut.done():
                if isinstance(outcome, Exception):
                    fut.set_exception(outcome)
                else:
                    fut.set_result(outcome)

    # -- the loop -----------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        # Persist what executed since the last seal as a sealed block: a clean stop
        # leaves no WAL to replay.
        if self.chain.open is not None and self.chain.open.txs:
            self.seal_block()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        self._block_deadline = loop.time() + self.block_time
        while True:
            try:
                now = loop.time()
                timeout = None
                if self.pool.has_ready():
                    due = self._last_miniblock + (0 if self.instant else self.miniblock_interval)
                    if now >= due:
                        self.run_miniblock()
                        await asyncio.sleep(0)
                        continue
                    timeout = due - now
                if not self.instant and not self.paused:
                    if now >= self._block_deadline:
                        self.seal_block()
                        self._block_deadline = max(self._block_deadline + self.block_time, now)
                        await asyncio.sleep(0)
                        continue
                    until_seal = self._block_deadline - now
                    timeout = until_seal if timeout is None else min(timeout, until_seal)
                self._wake.clear()
                if timeout is None:
                    await self._wake.wait()
                else:
                    try:
                        await asyncio.wait_for(self._wake.wait(), timeout)
                    except asyncio.TimeoutError:
                        pass
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not stop block production silently
                log.exception("producer loop error")
                await asyncio.sleep(0.01)

    # -- mini-blocks and blocks -----------------------------------------------------------

    def ensure_open(self) -> None:
        if self.chain.open is None:
            block = self.chain.open_block(int(time.time()))
            env = block.env
            self._wal([WAL_OPEN, env.number, env.timestamp])
            for sender in sorted(self.stalled):
                self.pool.reset_sender(sender)
            self.stalled.clear()

    def run_miniblock(self) -> list[Receipt]:
        """Execute ready transactions in arrival order as one mini-block."""
        started = time.perf_counter()
        self._last_miniblock = asyncio.get_running_loop().time() if self._task else 0.0
        pool = self.pool
        chain = self.chain
        limit = 1 if self.instant else self.max_miniblock_txs
        executed: list[SignedTx] = []
        receipts: list[Receipt] = []
        failed: list[tuple[SignedTx, TxInvalid]] = []
        block_full = False
        self.ensure_open()
        # A mini-block stops at its time budget too, so the next one (and the RPC
        # between them) is never far away; what is left runs in the next mini-block.
        deadline = started + self.miniblock_budget
        perf = time.perf_counter
        while len(executed) < limit and not block_full and perf() < deadline:
            batch = pool.take_ready(min(limit - len(executed), 64))
            if not batch:
                break
            for tx in batch:
                if pool.by_hash.get(tx.hash) is not tx:
                    continue  # replaced or already executed
                try:
                    receipt = chain.apply(tx)
                except TxInvalid as exc:
                    if exc.message == "gas limit reached" and chain.open.txs:
                        # The block is full: seal it; the tx runs first in the next one.
                        pool.requeue(tx)
                        self.stalled.add(tx.sender)
                        block_full = True
                        break
                    if exc.retry_later:
                        pool.requeue(tx)
                        self.stalled.add(tx.sender)
                    else:
                        pool.drop(tx)
                        failed.append((tx, exc))
                    continue
                pool.executed(tx)
                executed.append(tx)
                receipts.append(receipt)
        if executed:
            chain.end_miniblock()
            self._wal_raw(encode_raw([b"\x01", [[tx.raw, tx.sender] for tx in executed]]),
                          deletes=[b"p" + tx.hash for tx in executed])
        if failed:
            self.kv.write([], [b"p" + tx.hash for tx, _ in failed])
        # Preconfirm only after the WAL write above.
        for tx, receipt in zip(executed, receipts):
            self._resolve(tx.hash, receipt)
        for tx, exc in failed:
            log.info("dropped 0x%s: %s", tx.hash.hex(), exc.message)
            self._resolve(tx.hash, exc)
        if executed:
            for notify in self.on_miniblock:
                notify(chain.open, executed, receipts)
        if self.metrics is not None and executed:
            self.metrics.miniblock(len(executed), time.perf_counter() - started, executed)
        if (self.instant and executed) or block_full:
            self.seal_block()
        return receipts

    def seal_block(self) -> SealedBlock:
        started = time.perf_counter()
        self.ensure_open()
        sealed, puts, deletes = self.chain.seal()
        deletes.extend(self.wal_keys)
        self.wal_keys = []
        self._write(puts, deletes)
        if self.metrics is not None:
            self.metrics.block(sealed, time.perf_counter() - started)
        for notify in self.on_block:
            notify(sealed)
        return sealed

    def _wal(self, record: list, deletes=()) -> None:
        self._wal_raw(encode(record), deletes)

    def _wal_raw(self, encoded: bytes, deletes=()) -> None:
        self.wal_seq += 1
        key = b"w" + num8(self.wal_seq)
        self.wal_keys.append(key)
        self._write([(key, encoded)], deletes)

    def _write(self, puts, deletes) -> None:
        if self.metrics is None:
            self.kv.write(puts, deletes)
            return
        started = time.perf_counter()
        self.kv.write(puts, deletes)
        self.metrics.store_write.observe(time.perf_counter() - started)

    def log_dev_op(self, op: list) -> None:
        """Record a dev-method state change (anvil_setBalance, ...) for replay."""
        self.ensure_open()
        self._wal([WAL_DEV, op])
