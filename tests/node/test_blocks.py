"""The logs bloom equals eth_bloom's on random logs (ours is the fast one)."""
from __future__ import annotations

from eth_bloom import BloomFilter
from hypothesis import given, settings, strategies as st

from node.chain.blocks import Log, bloom_contains, logs_bloom

log_strategy = st.builds(
    Log,
    st.binary(min_size=20, max_size=20),
    st.lists(st.binary(min_size=32, max_size=32), max_size=4).map(tuple),
    st.binary(max_size=64),
)


def reference_bloom(logs) -> int:
    bloom = BloomFilter()
    for log in logs:
        bloom.add(log.address)
        for topic in log.topics:
            bloom.add(topic)
    return int(bloom)


@settings(max_examples=200, deadline=None)
@given(st.lists(log_strategy, max_size=6))
def test_logs_bloom_equals_eth_bloom(logs):
    # Twice: the second run answers from the per-item cache.
    assert logs_bloom(logs) == reference_bloom(logs) == logs_bloom(logs)
    for log in logs:
        assert bloom_contains(logs_bloom(logs), log.address)
