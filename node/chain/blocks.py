"""Block-level data: receipts, logs, blooms, headers, and their encodings and roots.

A receipt exists as soon as its mini-block has executed; the block hash it reports is
the zero hash (PENDING_BLOCK_HASH) until its block is sealed. Roots are built once per
sealed block with the ordered trie builder, never per mini-block.
"""
from __future__ import annotations

import hashlib

import rlp
from eth_bloom import BloomFilter
from sha3 import keccak_256
from rusty_rlp import encode_raw

from node.chain.transactions import keccak

ZERO_HASH = b"\x00" * 32
ZERO_ADDRESS = b"\x00" * 20
# Receipts of a mini-block not yet sealed carry this as blockHash (documented in docs/rpc.md).
PENDING_BLOCK_HASH = ZERO_HASH
EMPTY_UNCLE_HASH = keccak(rlp.encode([]))
BLANK_ROOT = keccak(rlp.encode(b""))
EMPTY_SHA256 = hashlib.sha256(b"").digest()
EMPTY_BLOOM = 0


class Log:
    __slots__ = ("address", "topics", "data", "log_index", "tx_index", "tx_hash", "block_number")

    def __init__(self, address: bytes, topics: tuple[bytes, ...], data: bytes) -> None:
        self.address = address
        self.topics = topics
        self.data = data
        self.log_index = 0
        self.tx_index = 0
        self.tx_hash = ZERO_HASH
        self.block_number = 0


def system_tx_hash(number: int) -> bytes:
    """The transaction hash a block's system logs carry (the exchange's block
    hooks: expiries, funding, maturities, de-risk actions): no transaction has
    it - as Polygon's Bor does for its state-sync logs - one per block."""
    return keccak(b"blixt-block-hooks" + number.to_bytes(8, "big"))


class Receipt:
    """What executing one transaction produced, plus where it sits in its block."""

    __slots__ = (
        "tx_hash", "tx_type", "sender", "to", "status", "gas_used", "cumulative_gas_used",
        "logs", "bloom", "contract_address", "effective_gas_price", "block_number",
        "tx_index", "miniblock", "output", "error",
    )

    def __init__(self) -> None:
        self.logs = ()
        self.bloom = EMPTY_BLOOM
        self.contract_address = None
        self.output = b""
        self.error = None

    def consensus_encoding(self) -> bytes:
        """The receipt as it goes into the receipts trie (EIP-2718 typed envelope)."""
        body = encode([
            b"\x01" if self.status else b"",
            self.cumulative_gas_used,
            self.bloom.to_bytes(256, "big"),
            [[log.address, list(log.topics), log.data] for log in self.logs],
        ])
        return body if self.tx_type == 0 else bytes((self.tx_type,)) + body

    def to_record(self) -> list:
        """Compact storage form, bytes only (for encode_raw); `from_record` inverts it."""
        b = _b
        return [
            self.tx_hash, b(self.tx_type), self.sender, self.to or b"", b(self.status),
            b(self.gas_used), b(self.cumulative_gas_used),
            [[log.address, list(log.topics), log.data, b(log.log_index)] for log in self.logs],
            self.contract_address or b"", b(self.effective_gas_price), b(self.block_number),
            b(self.tx_index), b(self.miniblock), self.output, (self.error or "").encode(),
        ]

    @classmethod
    def from_record(cls, rec: list) -> "Receipt":
        r = cls()
        (r.tx_hash, tx_type, r.sender, to, status, gas_used, cumulative, logs, contract,
         price, number, index, miniblock, r.output, error) = rec
        r.tx_type = _int(tx_type)
        r.to = to or None
        r.status = _int(status)
        r.gas_used = _int(gas_used)
        r.cumulative_gas_used = _int(cumulative)
        r.contract_address = contract or None
        r.effective_gas_price = _int(price)
        r.block_number = _int(number)
        r.tx_index = _int(index)
        r.miniblock = _int(miniblock)
        r.error = error.decode() or None
        built = []
        for address, topics, data, log_index in logs:
            log = Log(address, tuple(topics), data)
            log.log_index = _int(log_index)
            log.tx_index = r.tx_index
            log.tx_hash = r.tx_hash
            log.block_number = r.block_number
            built.append(log)
        r.logs = tuple(built)
        r.bloom = logs_bloom(r.logs)
        return r


def encode(item) -> bytes:
    """RLP of nested lists of bytes and ints without pyrlp's sedes inference (~20x
    faster on the seal path, PERFORMANCE.md point 6): ints become minimal big-endian."""
    return encode_raw(_raw(item))


def _raw(item):
    if isinstance(item, bytes):
        return item
    if isinstance(item, int):
        return item.to_bytes((item.bit_length() + 7) // 8, "big") if item else b""
    if isinstance(item, str):
        return item.encode()
    return [_raw(x) for x in item]


def _b(n: int) -> bytes:
    return n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""


def _int(b: bytes | int) -> int:
    return b if isinstance(b, int) else int.from_bytes(b, "big")


def logs_bloom(logs) -> int:
    """The 2048-bit logs bloom (yellow paper 4.3.1), as eth_bloom computes it.

    eth_bloom hashes with eth-hash's pycryptodome backend, ~20 µs an item; here
    safe-pysha3 and a cache of each item's three bits (addresses and event topics
    repeat from log to log) make it ~1 µs. tests/node/test_blocks.py holds the two
    equal on random logs.
    """
    if not logs:
        return EMPTY_BLOOM
    bits = _BLOOM_BITS
    bloom = 0
    for log in logs:
        mask = bits.get(log.address)
        if mask is None:
            mask = _bloom_bits(log.address)
        bloom |= mask
        for topic in log.topics:
            mask = bits.get(topic)
            if mask is None:
                mask = _bloom_bits(topic)
            bloom |= mask
    return bloom


_BLOOM_BITS: dict[bytes, int] = {}


def _bloom_bits(item: bytes) -> int:
    h = keccak_256(item).digest()
    mask = (1 << (((h[0] << 8) | h[1]) & 2047)) | (1 << (((h[2] << 8) | h[3]) & 2047)) \
        | (1 << (((h[4] << 8) | h[5]) & 2047))
    if len(_BLOOM_BITS) >= 65_536:  # bounded: order ids and amounts in topics never repeat
        _BLOOM_BITS.clear()
    _BLOOM_BITS[item] = mask
    return mask


def bloom_contains(bloom: int, item: bytes) -> bool:
    return item in BloomFilter(bloom)


class Header:
    """A sealed block's header (Prague fields) with its hash."""

    __slots__ = (
        "parent_hash", "coinbase", "state_root", "tx_root", "receipt_root", "bloom",
        "number", "gas_limit", "gas_used", "timestamp", "extra_data", "mix_hash",
        "base_fee", "hash", "miniblock_count", "size",
    )

    def fields(self) -> list:
        return [
            self.parent_hash, EMPTY_UNCLE_HASH, self.coinbase, self.state_root, self.tx_root,
            self.receipt_root, self.bloom.to_bytes(256, "big"), 0, self.number, self.gas_limit,
            self.gas_used, self.timestamp, self.extra_data, self.mix_hash, b"\x00" * 8,
            self.base_fee, BLANK_ROOT, 0, 0, ZERO_HASH, EMPTY_SHA256,
        ]

    def encode(self) -> bytes:
        return encode(self.fields())

    def seal(self) -> None:
        self.hash = keccak(self.encode())

    def to_record(self) -> list:
        return [self.encode(), self.miniblock_count, self.size]

    @classmethod
    def from_record(cls, rec: list) -> "Header":
        encoded, miniblock_count, size = rec
        f = rlp.decode(encoded)
        h = cls()
        h.parent_hash, h.coinbase, h.state_root, h.tx_root, h.receipt_root = f[0], f[2], f[3], f[4], f[5]
        h.bloom = _int(f[6])
        h.number, h.gas_limit, h.gas_used, h.timestamp = (_int(x) for x in f[8:12])
        h.extra_data, h.mix_hash = f[12], f[13]
        h.base_fee = _int(f[15])
        h.miniblock_count = _int(miniblock_count)
        h.size = _int(size)
        h.hash = keccak(encoded)
        return h


def next_base_fee(parent_base_fee: int, parent_gas_used: int, parent_gas_limit: int) -> int:
    """EIP-1559 with elasticity 2 and max change 1/8, in integers as the spec writes it."""
    target = parent_gas_limit // 2
    if parent_gas_used == target:
        return parent_base_fee
    if parent_gas_used > target:
        delta = max(parent_base_fee * (parent_gas_used - target) // target // 8, 1)
        return parent_base_fee + delta
    delta = parent_base_fee * (target - parent_gas_used) // target // 8
    return parent_base_fee - delta
