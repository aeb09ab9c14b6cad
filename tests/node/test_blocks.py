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


def test_system_logs_round_trip_through_the_store(tmp_path):
    """A block's system logs (the exchange hooks' events) are kept under their
    own key and read back with their positions: after the transactions' logs,
    one transaction index past the last, the block's system-log hash."""
    from node.chain.blocks import system_tx_hash
    from node.chain.kv import LevelKV
    from node.chain.store import ChainStore, system_logs_put

    kv = LevelKV(tmp_path / "db")
    try:
        store = ChainStore(kv)
        logs = []
        for i, (topics, data) in enumerate([((b"\x01" * 32, b"\x02" * 32), b"abc"), ((b"\x03" * 32,), b"")]):
            log = Log(b"\x11" * 20, topics, data)
            log.log_index, log.tx_index, log.tx_hash, log.block_number = 4 + i, 2, system_tx_hash(7), 7
            logs.append(log)
        kv.write([system_logs_put(7, logs)])
        back = store.system_logs(7)
        assert [(x.address, x.topics, x.data, x.log_index, x.tx_index, x.tx_hash, x.block_number) for x in back] == \
            [(x.address, x.topics, x.data, x.log_index, x.tx_index, x.tx_hash, x.block_number) for x in logs]
        assert store.system_logs(8) == []
        # a sealed block's writes index the system-log hash (eth_getTransactionReceipt of it)
        from node.chain.blocks import Header
        header = Header()
        header.parent_hash = header.state_root = header.tx_root = header.receipt_root = b"\x00" * 32
        header.mix_hash, header.coinbase, header.extra_data = b"\x00" * 32, b"\x00" * 20, b""
        header.bloom = header.gas_limit = header.gas_used = header.timestamp = header.base_fee = 0
        header.number, header.miniblock_count, header.size = 7, 1, 0
        header.seal()
        kv.write(store.block_puts(header, [], [], [], logs))
        assert store.system_tx_block(system_tx_hash(7)) == 7
        assert store.system_tx_block(system_tx_hash(8)) is None
    finally:
        kv.close()
