"""The mempool: per-sender nonce queues feeding one first-come-first-served ready queue.

    add(tx) ──► sender queue (by nonce) ──► ready queue (FIFO by the time a tx became
                 future nonces wait          executable) ──► take_ready() ──► producer

A transaction is *ready* when every lower nonce of its sender has executed or is ahead
of it in the ready queue. Ordering is arrival order: what a trading venue promises.
Errors are `PoolError` with geth's wording; the RPC maps them to -32000.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable

from node.chain.transactions import SignedTx


class PoolError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SenderQueue:
    __slots__ = ("txs", "ready_upto")

    def __init__(self, ready_upto: int) -> None:
        self.txs: dict[int, SignedTx] = {}
        # The next nonce not yet pushed to the ready queue.
        self.ready_upto = ready_upto


class Mempool:
    def __init__(self, config, state_nonce: Callable[[bytes], int]) -> None:
        self.max_per_sender = config.max_pending_per_sender
        self.max_total = config.max_pending_total
        self.bump = config.price_bump_percent
        self.state_nonce = state_nonce
        self.by_hash: dict[bytes, SignedTx] = {}
        self.senders: dict[bytes, SenderQueue] = {}
        self.ready: deque[tuple[bytes, int]] = deque()

    def __len__(self) -> int:
        return len(self.by_hash)

    def has_ready(self) -> bool:
        return bool(self.ready)

    def pending_nonce(self, sender: bytes) -> int:
        """The nonce a new transaction of `sender` should use (state plus ready txs)."""
        queue = self.senders.get(sender)
        state_nonce = self.state_nonce(sender)
        return state_nonce if queue is None else max(state_nonce, queue.ready_upto)

    def add(self, tx: SignedTx) -> SignedTx | None:
        """Admit `tx`; returns the transaction it replaced, if any. Raises PoolError."""
        if tx.hash in self.by_hash:
            raise PoolError("already known")
        sender = tx.sender
        state_nonce = self.state_nonce(sender)
        if tx.nonce < state_nonce:
            raise PoolError(f"nonce too low: next nonce {state_nonce}, tx nonce {tx.nonce}")
        queue = self.senders.get(sender)
        if queue is None:
            queue = self.senders[sender] = SenderQueue(state_nonce)
        elif queue.ready_upto < state_nonce:
            queue.ready_upto = state_nonce
        old = queue.txs.get(tx.nonce)
        if old is not None:
            need_fee = old.fee_cap() * (100 + self.bump) // 100
            need_tip = old.tip_cap() * (100 + self.bump) // 100
            if tx.fee_cap() < need_fee or tx.tip_cap() < need_tip:
                raise PoolError("replacement transaction underpriced")
            del self.by_hash[old.hash]
            queue.txs[tx.nonce] = tx
            self.by_hash[tx.hash] = tx
            return old
        if len(queue.txs) >= self.max_per_sender:
            raise PoolError(f"account limit exceeded: {self.max_per_sender} pending transactions")
        if len(self.by_hash) >= self.max_total:
            raise PoolError("txpool is full")
        queue.txs[tx.nonce] = tx
        self.by_hash[tx.hash] = tx
        self._promote(sender, queue)
        return None

    def _promote(self, sender: bytes, queue: SenderQueue) -> None:
        txs = queue.txs
        nonce = queue.ready_upto
        ready = self.ready
        while nonce in txs:
            ready.append((sender, nonce))
            nonce += 1
        queue.ready_upto = nonce

    def take_ready(self, limit: int) -> list[SignedTx]:
        """Pop up to `limit` ready transactions in FCFS order (they stay known until
        `executed` or `drop` is called for them)."""
        out = []
        ready = self.ready
        senders = self.senders
        while ready and len(out) < limit:
            sender, nonce = ready.popleft()
            queue = senders.get(sender)
            if queue is None or nonce >= queue.ready_upto:
                continue  # stale: the sender's queue was reset below this nonce
            tx = queue.txs.get(nonce)
            if tx is not None:
                out.append(tx)
        return out

    def executed(self, tx: SignedTx) -> None:
        self._forget(tx)

    def drop(self, tx: SignedTx) -> list[SignedTx]:
        """Remove `tx` for good; later nonces of its sender go back to waiting.
        Returns nothing dropped besides `tx` (they stay queued as future transactions)."""
        self._forget(tx)
        queue = self.senders.get(tx.sender)
        if queue is not None:
            queue.ready_upto = min(queue.ready_upto, tx.nonce)
        return []

    def requeue(self, tx: SignedTx) -> None:
        """`tx` could not run yet (e.g. fee below the base fee): back to waiting, in order."""
        queue = self.senders.get(tx.sender)
        if queue is not None:
            queue.ready_upto = min(queue.ready_upto, tx.nonce)

    def reset_sender(self, sender: bytes) -> None:
        """Re-derive `sender`'s ready queue from the state nonce (after execution or a
        dev method changed it)."""
        queue = self.senders.get(sender)
        if queue is None:
            return
        state_nonce = self.state_nonce(sender)
        for nonce in [n for n in queue.txs if n < state_nonce]:
            self.by_hash.pop(queue.txs.pop(nonce).hash, None)
        if not queue.txs:
            del self.senders[sender]
            return
        if queue.ready_upto < state_nonce or queue.ready_upto > state_nonce and not self._contiguous(queue, state_nonce):
            queue.ready_upto = state_nonce
        self._promote(sender, queue)

    def _contiguous(self, queue: SenderQueue, start: int) -> bool:
        return all(n in queue.txs for n in range(start, queue.ready_upto))

    def _forget(self, tx: SignedTx) -> None:
        self.by_hash.pop(tx.hash, None)
        queue = self.senders.get(tx.sender)
        if queue is None:
            return
        if queue.txs.get(tx.nonce) is tx:
            del queue.txs[tx.nonce]
        if not queue.txs:
            del self.senders[tx.sender]

    def pending(self) -> list[SignedTx]:
        return list(self.by_hash.values())
