"""Mempool rules: nonce queues, FCFS readiness, replacement bump, limits."""
from __future__ import annotations

import pytest
from eth_account import Account

from node.chain.transactions import decode_raw_transaction
from node.config import SequencerConfig
from sequencer.mempool import Mempool, PoolError

KEYS = [bytes([i + 1]) * 32 for i in range(3)]


def tx(key: bytes, nonce: int, fee: int = 10**10, tip: int = 10**9, value: int = 1):
    raw = Account.sign_transaction({"type": 2, "chainId": 31337, "nonce": nonce, "to": "0x" + "42" * 20,
                                    "value": value, "gas": 21000, "maxFeePerGas": fee,
                                    "maxPriorityFeePerGas": tip}, key).raw_transaction
    return decode_raw_transaction(bytes(raw), 31337)


def pool(**overrides) -> tuple[Mempool, dict]:
    nonces: dict[bytes, int] = {}
    config = SequencerConfig(**overrides)
    return Mempool(config, lambda sender: nonces.get(sender, 0)), nonces


def test_ready_order_is_arrival_order_and_gaps_wait():
    p, _ = pool()
    a0, b0, a2, a1 = tx(KEYS[0], 0), tx(KEYS[1], 0), tx(KEYS[0], 2), tx(KEYS[0], 1)
    for t in (a0, b0, a2):
        p.add(t)
    assert p.take_ready(10) == [a0, b0]          # a2 waits for a1
    assert p.pending_nonce(a0.sender) == 1
    p.add(a1)                                      # fills the gap: a1 then a2 become ready
    assert p.take_ready(10) == [a1, a2]
    assert p.pending_nonce(a0.sender) == 3


def test_replacement_needs_the_fee_bump_on_both_caps():
    p, _ = pool()
    first = tx(KEYS[0], 0, fee=10**10, tip=10**9)
    p.add(first)
    with pytest.raises(PoolError, match="already known"):
        p.add(first)
    with pytest.raises(PoolError, match="underpriced"):
        p.add(tx(KEYS[0], 0, fee=10**10 * 2, tip=10**9 + 1, value=2))   # tip bump under 10 %
    better = tx(KEYS[0], 0, fee=11 * 10**9, tip=11 * 10**8, value=3)
    assert p.add(better) is first
    assert p.take_ready(10) == [better]            # takes the old one's place
    assert first.hash not in p.by_hash


def test_nonce_too_low_and_limits():
    p, nonces = pool(max_pending_per_sender=2, max_pending_total=3)
    nonces[tx(KEYS[0], 0).sender] = 5
    with pytest.raises(PoolError, match="nonce too low: next nonce 5, tx nonce 4"):
        p.add(tx(KEYS[0], 4))
    p.add(tx(KEYS[0], 5))
    p.add(tx(KEYS[0], 6))
    with pytest.raises(PoolError, match="account limit"):
        p.add(tx(KEYS[0], 7))
    p.add(tx(KEYS[1], 0))
    with pytest.raises(PoolError, match="txpool is full"):
        p.add(tx(KEYS[2], 0))
    assert len(p) == 3


def test_executed_and_dropped_transactions_leave_and_later_nonces_wait():
    p, nonces = pool()
    t0, t1, t2 = tx(KEYS[0], 0), tx(KEYS[0], 1), tx(KEYS[0], 2)
    for t in (t0, t1, t2):
        p.add(t)
    assert p.take_ready(1) == [t0]
    p.executed(t0)
    nonces[t0.sender] = 1
    assert p.take_ready(1) == [t1]
    p.drop(t1)                                     # e.g. it could no longer pay
    assert t1.hash not in p.by_hash and t2.hash in p.by_hash
    p.reset_sender(t0.sender)
    assert p.take_ready(10) == []                  # t2 waits for a new nonce 1
    t1b = tx(KEYS[0], 1, value=9)
    p.add(t1b)
    assert [t.nonce for t in p.take_ready(10)][:2] == [1, 2]
