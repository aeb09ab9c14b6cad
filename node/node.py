"""The Blixt node: storage, genesis or recovery, chain, mempool, producer, RPC.

Start-up: open the store; on an empty store write genesis, else load the head state and
replay the write-ahead log (mini-blocks executed after the last seal, and dev-method
changes), then re-admit the acknowledged transactions still in the mempool.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from exchange import Engine
from exchange import load as load_exchange_config
from node.chain.chain import EXCHANGE_COMMANDS, EXCHANGE_KEY, Chain
from node.chain.execution import TxInvalid
from node.chain.genesis import dev_accounts, genesis_header, genesis_state
from node.chain.kv import LevelKV, MemoryKV
from node.chain.state import AccountRecord, FlatState, StateChanges
from node.chain.store import ChainStore, num8
from node.chain.transactions import TxDecodeError, decode_raw_transaction
from node.config import Config
from precompiles.exchange import DIGEST_SLOT, EXCHANGE_ADDRESS, ExchangeRuntime, decode_commands
from sequencer.mempool import Mempool, PoolError
from sequencer.producer import WAL_DEV, WAL_MINIBLOCK, WAL_OPEN, Producer

log = logging.getLogger("blixt.node")


class StartupError(RuntimeError):
    pass


class Node:
    def __init__(self, config: Config, metrics=None) -> None:
        self.config = config
        self.metrics = metrics
        self.accounts = dev_accounts(config.accounts.mnemonic, config.accounts.count)
        self._keys = {address: key for address, key in self.accounts}
        if config.storage.ephemeral:
            kv = MemoryKV()
        else:
            kv = LevelKV(Path(config.storage.data_dir) / "chain", fsync=config.storage.fsync)
        self.kv = kv
        self.store = ChainStore(kv)
        self.exchange = self._open_exchange()
        self.chain = self._open_chain()
        self.chain.state.exchange = self.exchange
        self.chain.exchange_command_blocks = self._exchange_command_blocks
        self.chain.exchange_commands_since_snapshot = self._exchange_commands_replayed
        self.pool = Mempool(config.sequencer, self.chain.state.get_nonce)
        self.producer = Producer(self.chain, self.pool, config, metrics)
        self._recover()
        self._snapshots: dict[int, tuple] = {}
        self._next_snapshot = 1

    def key_of(self, address: bytes) -> bytes | None:
        return self._keys.get(address)

    # -- start-up ------------------------------------------------------------------------

    def _open_exchange(self) -> ExchangeRuntime:
        """The engine as of the head block (its bytes are written with each seal that
        changed it), wrapped for the precompile."""
        config = self.config
        exchange_config = load_exchange_config(config.exchange or default_exchange_table())
        snapshot = self.kv.get(EXCHANGE_KEY)
        if snapshot is not None:
            engine = Engine.from_bytes(snapshot[8:], exchange_config)
            after = int.from_bytes(snapshot[:8], "big") + 1
        else:
            engine = Engine(exchange_config)
            after = 0
        native = None
        if config.chain.exchange_native_asset:
            try:
                native = exchange_config.asset(config.chain.exchange_native_asset).id
            except KeyError:
                raise StartupError(f"chain.exchange_native_asset: no exchange asset "
                                   f"{config.chain.exchange_native_asset!r}") from None
        observer = self.metrics.exchange_command if self.metrics is not None else None
        runtime = ExchangeRuntime(engine, native_asset=native, faucet=config.chain.exchange_faucet,
                                  observer=observer)
        # The sealed blocks after the snapshot: re-apply their recorded commands.
        self._exchange_command_blocks = []
        replayed = 0
        for key, value in self.kv.items(EXCHANGE_COMMANDS + num8(after), EXCHANGE_COMMANDS + b"\xff" * 8):
            commands = decode_commands(value)
            runtime.replay(commands)
            self._exchange_command_blocks.append(int.from_bytes(key[1:], "big"))
            replayed += len(commands)
        self._exchange_commands_replayed = replayed
        return runtime

    def _open_chain(self) -> Chain:
        config = self.config
        store = self.store
        head_number = store.head_number()
        if head_number is None:
            timestamp = config.chain.genesis_timestamp or int(time.time())
            state = genesis_state(config, self.accounts, self.exchange.digest())
            header = genesis_header(config, state, timestamp)
            puts = store.block_puts(header, [], [])
            state_puts, deletes = store.state_puts(state.take_changes(), 0)
            puts.extend(state_puts)
            puts.append((b"Mchain_id", config.chain.chain_id.to_bytes(8, "big")))
            self.kv.write(puts, deletes)
            return Chain(config, store, state, header)
        stored_chain_id = int.from_bytes(store.meta("chain_id") or b"", "big")
        if stored_chain_id != config.chain.chain_id:
            raise StartupError(
                f"the data directory holds chain id {stored_chain_id}, not {config.chain.chain_id}: "
                f"use another --data-dir or the same chain id")
        state = FlatState.from_records(store.iter_accounts(), store.iter_storage(), store.iter_code())
        header = store.header(head_number)
        chain = Chain(config, store, state, header)
        if state.state_root() != header.state_root:
            raise StartupError("stored state does not match the head block's state root")
        if state.get_storage(EXCHANGE_ADDRESS, DIGEST_SLOT) != int.from_bytes(self.exchange.digest(), "big"):
            raise StartupError("the stored exchange state does not match the head block's exchange digest")
        return chain

    def _recover(self) -> None:
        chain = self.chain
        producer = self.producer
        replayed = 0
        for seq, record in self.store.wal_entries():
            producer.wal_seq = seq
            producer.wal_keys.append(b"w" + num8(seq))
            kind = int.from_bytes(record[0], "big")
            if kind == WAL_OPEN:
                number = int.from_bytes(record[1], "big")
                if chain.open is not None:
                    # A block that was opened but whose seal never reached the store.
                    producer.seal_block()
                if number != chain.head.number + 1:
                    raise StartupError(f"write-ahead log opens block {number} after head {chain.head.number}")
                chain.next_timestamp = int.from_bytes(record[2], "big")
                chain.open_block(0)
            elif kind == WAL_MINIBLOCK:
                for raw, sender in record[1]:
                    tx = decode_raw_transaction(raw, chain.chain_id, sender=sender)
                    try:
                        chain.apply(tx)
                    except TxInvalid as exc:  # cannot happen for a deterministic replay
                        raise StartupError(f"replay of 0x{tx.hash.hex()} failed: {exc.message}") from None
                    replayed += 1
                chain.end_miniblock()
            elif kind == WAL_DEV:
                self._apply_dev_op(record[1])
        if chain.open is not None:
            producer.seal_block()
        readmitted = 0
        for raw in list(self.store.pool_entries()):
            try:
                tx = decode_raw_transaction(raw, chain.chain_id)
                self.pool.add(tx)
                readmitted += 1
            except (TxDecodeError, PoolError):
                self.kv.write([], [b"p" + decode_hash(raw)])
        if replayed or readmitted:
            log.info("recovered: %d transactions replayed from the WAL, %d re-admitted to the mempool",
                     replayed, readmitted)

    # -- dev methods ---------------------------------------------------------------------

    def dev_op(self, op: list) -> None:
        self.producer.log_dev_op(op)
        self._apply_dev_op(op)
        if op[0] in ("nonce", b"nonce"):
            self.pool.reset_sender(op[1])
        self.producer._wake.set()

    def _apply_dev_op(self, op: list) -> None:
        kind = op[0].decode() if isinstance(op[0], bytes) else op[0]
        state = self.chain.state
        address = op[1]
        as_int = (lambda v: v if isinstance(v, int) else int.from_bytes(v, "big"))
        if kind == "balance":
            state.set_balance(address, as_int(op[2]))
        elif kind == "nonce":
            state.set_nonce(address, as_int(op[2]))
        elif kind == "code":
            state.set_code(address, op[2])
        elif kind == "storage":
            state.set_storage(address, as_int(op[2]), as_int(op[3]))
        else:
            raise StartupError(f"unknown dev operation {kind!r} in the write-ahead log")

    def mine_block(self) -> None:
        """evm_mine: run what is ready, then seal a block now."""
        if self.pool.has_ready():
            self.producer.run_miniblock()
        self.producer.seal_block()

    def set_next_timestamp(self, timestamp: int) -> None:
        chain = self.chain
        if chain.open is not None and not chain.open.txs:
            # Nothing ran in the open block yet: re-open it at the new time.
            chain.open = None
            chain.next_timestamp = timestamp
            self.producer.ensure_open()
        else:
            chain.next_timestamp = timestamp

    def snapshot(self) -> str:
        """evm_snapshot: seal what ran, remember the head and a copy of the state."""
        if self.chain.open is not None and self.chain.open.txs:
            self.producer.seal_block()
        sid = self._next_snapshot
        self._next_snapshot += 1
        self._snapshots[sid] = (self.chain.head, copy_state(self.chain.state), self.chain.time_offset,
                                self.exchange.engine.to_bytes())
        return hex(sid)

    def revert(self, sid: int) -> bool:
        """evm_revert: back to the snapshot's head and state; later blocks are removed."""
        snap = self._snapshots.get(sid)
        if snap is None:
            return False
        for later in [k for k in self._snapshots if k >= sid]:
            del self._snapshots[later]
        head, state, offset, engine_bytes = snap
        chain = self.chain
        if chain.open is not None:
            chain.open = None
        deletes = []
        for number in range(head.number + 1, chain.head.number + 1):
            header = chain.header(number)
            n8 = num8(number)
            deletes += [b"h" + n8, b"b" + n8, b"r" + n8, b"l" + n8]
            if header is not None:
                deletes.append(b"H" + header.hash)
                chain.hash_to_number.pop(header.hash, None)
            for tx in chain.block_transactions(number):
                deletes.append(b"t" + tx.hash)
                chain.recent_tx.pop(tx.hash, None)
            chain.recent.pop(number, None)
        # Head state: rewrite it whole from the snapshot (devnet states are small).
        for key, _ in list(self.kv.items(b"a", b"b")) + list(self.kv.items(b"s", b"t")):
            deletes.append(key)
        for prefix in (b"y", b"z"):
            for key, _ in list(self.kv.items(prefix, bytes((prefix[0] + 1,)))):
                if int.from_bytes(key[-8:], "big") > head.number:
                    deletes.append(key)
        deletes.extend(self.producer.wal_keys)
        self.producer.wal_keys = []
        puts = [(b"Mhead", num8(head.number))]
        puts.extend(self.store.state_puts(all_records(state), head.number)[0])
        # History of block `head.number` was already right; keep only head keys from this.
        puts = [(k, v) for k, v in puts if not k.startswith((b"y", b"z"))]
        puts.append((EXCHANGE_KEY, num8(head.number) + engine_bytes))
        deletes.extend(key for key, _ in self.kv.items(EXCHANGE_COMMANDS, EXCHANGE_COMMANDS + b"\xff" * 8))
        chain.exchange_command_blocks = []
        chain.exchange_commands_since_snapshot = 0
        self.kv.write(puts, deletes)
        self.exchange.reset(Engine.from_bytes(engine_bytes, self.exchange.engine.config))
        chain.state = copy_state(state)
        chain.state.exchange = self.exchange
        chain.head = head
        chain.time_offset = offset
        chain.next_timestamp = None
        self.pool.state_nonce = chain.state.get_nonce
        for sender in list(self.pool.senders):
            self.pool.reset_sender(sender)
        return True


def default_exchange_table() -> dict:
    """The exchange package's default assets and markets (exchange/default_config.toml)."""
    import tomllib
    from importlib import resources

    return tomllib.loads(resources.files("exchange").joinpath("default_config.toml").read_text())


def decode_hash(raw: bytes) -> bytes:
    from node.chain.transactions import keccak

    return keccak(raw)


def copy_state(state: FlatState) -> FlatState:
    return FlatState.from_records(state.iter_accounts(), state.iter_storage(), state.iter_code())


def all_records(state: FlatState) -> StateChanges:
    """The whole state as a change set (for rewriting the head state in the store)."""
    return StateChanges(
        tuple((a, AccountRecord(n, b, h)) for a, n, b, h in state.iter_accounts()),
        tuple(state.iter_storage()),
        tuple(state.iter_code()),
    )
