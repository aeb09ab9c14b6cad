"""The chain's persistent layout over a KV backend (LevelDB by default).

Keys (one-byte prefix, big-endian numbers so that ranges iterate in order):
  M<name>            meta: head number, genesis timestamp, config fingerprint
  h<num8>            sealed header record       H<hash32>   -> num8
  b<num8>            block body: [raw transaction, sender] pairs, in order
  r<num8>            the block's receipts (compact records)
  l<num8>            the block's system logs (exchange hooks): [address, [topics], data], in order
  t<hash32>          tx location: num8 + index4
  a<addr20>          account [nonce, balance, code_hash] at the head
  s<addr20><slot32>  storage value at the head
  c<hash32>          code
  y<addr20><num8>    account as of the end of block num (history, only when changed)
  z<addr20><slot32><num8>  storage as of the end of block num (history)
  w<seq8>            write-ahead log: mini-blocks executed since the last seal
  p<hash32>          acknowledged transactions still in the mempool (raw)

A sealed block, its state changes, its history and the removal of its WAL entries go in
one atomic batch: after a kill, either the block is there or its WAL is.
"""
from __future__ import annotations

import rlp

from rusty_rlp import encode_raw

from node.chain.blocks import Header, Log, Receipt, encode, system_tx_hash
from node.chain.kv import KV

ZERO_SLOT_VALUE = b""


def num8(n: int) -> bytes:
    return n.to_bytes(8, "big")


def slot32(slot: int) -> bytes:
    return slot.to_bytes(32, "big")


def _int(b: bytes) -> int:
    return int.from_bytes(b, "big")


def system_logs_put(number: int, logs: list) -> tuple[bytes, bytes]:
    """The store write of a block's system logs: their first transaction and log
    index, then [address, [topics], data] each (ChainStore.system_logs reads it)."""
    first = logs[0]
    return (b"l" + num8(number), encode_raw([first.tx_index.to_bytes(4, "big"), first.log_index.to_bytes(4, "big"),
                                             [[log.address, list(log.topics), log.data] for log in logs]]))


class ChainStore:
    def __init__(self, kv: KV) -> None:
        self.kv = kv

    # -- meta ---------------------------------------------------------------------------
    def meta(self, name: str) -> bytes | None:
        return self.kv.get(b"M" + name.encode())

    def head_number(self) -> int | None:
        raw = self.meta("head")
        return None if raw is None else _int(raw)

    # -- blocks -------------------------------------------------------------------------
    def header(self, number: int) -> Header | None:
        raw = self.kv.get(b"h" + num8(number))
        return None if raw is None else Header.from_record(rlp.decode(raw))

    def number_of_hash(self, block_hash: bytes) -> int | None:
        raw = self.kv.get(b"H" + block_hash)
        return None if raw is None else _int(raw)

    def body(self, number: int) -> list[bytes]:
        raw = self.kv.get(b"b" + num8(number))
        return [] if raw is None else rlp.decode(raw)

    def receipts(self, number: int) -> list[Receipt]:
        raw = self.kv.get(b"r" + num8(number))
        return [] if raw is None else [Receipt.from_record(rec) for rec in rlp.decode(raw)]

    def system_logs(self, number: int) -> list:
        """A sealed block's system logs (Chain.seal), with their positions."""
        raw = self.kv.get(b"l" + num8(number))
        if raw is None:
            return []
        logs = []
        records = rlp.decode(raw)
        tx_index, first = _int(records[0]), _int(records[1])
        tx_hash = system_tx_hash(number)
        for i, (address, topics, data) in enumerate(records[2]):
            log = Log(address, tuple(topics), data)
            log.log_index, log.tx_index, log.tx_hash, log.block_number = first + i, tx_index, tx_hash, number
            logs.append(log)
        return logs

    def system_tx_block(self, tx_hash: bytes) -> int | None:
        """The block whose system logs carry ``tx_hash``, if one does."""
        raw = self.kv.get(b"S" + tx_hash)
        return None if raw is None else _int(raw)

    def tx_location(self, tx_hash: bytes) -> tuple[int, int] | None:
        raw = self.kv.get(b"t" + tx_hash)
        return None if raw is None else (_int(raw[:8]), _int(raw[8:]))

    def block_puts(self, header: Header, raw_txs: list[list[bytes]], receipts: list[Receipt],
                   receipt_records: list | None = None, system_logs: list | None = None) -> list:
        """`raw_txs` are [raw, sender] pairs: the sender is kept so a read never re-recovers."""
        n8 = num8(header.number)
        # system logs, and their transaction hash -> block number (eth_getTransactionReceipt)
        puts = [system_logs_put(header.number, system_logs),
                (b"S" + system_tx_hash(header.number), n8)] if system_logs else []
        puts += [
            (b"h" + n8, encode(header.to_record())),
            (b"H" + header.hash, n8),
            (b"b" + n8, encode_raw(raw_txs)),
            (b"r" + n8, encode_raw(receipt_records if receipt_records is not None
                                   else [r.to_record() for r in receipts])),
            (b"Mhead", n8),
        ]
        for index, receipt in enumerate(receipts):
            puts.append((b"t" + receipt.tx_hash, n8 + index.to_bytes(4, "big")))
        return puts

    # -- state --------------------------------------------------------------------------
    def state_puts(self, changes, number: int) -> tuple[list, list]:
        """Puts and deletes that move the head state by `changes` and record history."""
        puts, deletes = [], []
        n8 = num8(number)
        for address, account in changes.accounts:
            if account is None:
                deletes.append(b"a" + address)
                puts.append((b"y" + address + n8, b""))
            else:
                nonce, balance, code_hash = account
                enc = encode([nonce, balance, code_hash])
                puts.append((b"a" + address, enc))
                puts.append((b"y" + address + n8, enc))
        for address, slot, value in changes.storage:
            key = address + slot32(slot)
            if value:
                enc = encode(value)
                puts.append((b"s" + key, enc))
            else:
                enc = ZERO_SLOT_VALUE
                deletes.append(b"s" + key)
            puts.append((b"z" + key + n8, enc))
        for code_hash, code in changes.code:
            puts.append((b"c" + code_hash, code))
        return puts, deletes

    def iter_accounts(self):
        for key, value in self.kv.items(b"a", b"b"):
            nonce, balance, code_hash = rlp.decode(value)
            yield key[1:], _int(nonce), _int(balance), code_hash

    def iter_storage(self):
        for key, value in self.kv.items(b"s", b"t"):
            yield key[1:21], _int(key[21:]), _int(rlp.decode(value))

    def iter_code(self):
        for key, value in self.kv.items(b"c", b"d"):
            yield key[1:], value

    def code(self, code_hash: bytes) -> bytes | None:
        return self.kv.get(b"c" + code_hash)

    def account_at(self, address: bytes, number: int):
        """(nonce, balance, code_hash) as of the end of block `number`, or None."""
        for _key, value in self.kv.items(b"y" + address, b"y" + address + num8(number + 1), reverse=True):
            if not value:
                return None
            nonce, balance, code_hash = rlp.decode(value)
            return _int(nonce), _int(balance), code_hash
        return None

    def storage_at(self, address: bytes, slot: int, number: int) -> int:
        prefix = b"z" + address + slot32(slot)
        for _key, value in self.kv.items(prefix, prefix + num8(number + 1), reverse=True):
            return _int(rlp.decode(value)) if value else 0
        return 0

    # -- write-ahead log and mempool ------------------------------------------------------
    def wal_entries(self):
        for key, value in self.kv.items(b"w", b"x"):
            yield _int(key[1:]), rlp.decode(value)

    def pool_entries(self):
        for _key, value in self.kv.items(b"p", b"q"):
            yield value
