"""The chain: head state, sealed blocks, the open block and its mini-blocks.

    open_block()  ->  apply(tx)* + end_miniblock()  (repeat)  ->  seal()
        env            receipts, preconfirmed           header, roots, persisted

`Chain` is driven by the sequencer (sequencer/producer.py) and read by the RPC. It does
the work of a block; *when* to do it is the producer's business. State is one FlatState
(the latest mini-block); sealed history lives in the store (node/chain/store.py).
"""
from __future__ import annotations

from collections import OrderedDict

import rlp

from node.chain.blocks import Header, Log, Receipt, logs_bloom, next_base_fee, system_tx_hash, PENDING_BLOCK_HASH
from node.chain.execution import BlockEnv, Executor
from node.chain.state import FlatState
from node.chain.store import ChainStore, num8
from node.chain.transactions import SignedTx, keccak, decode_raw_transaction
from node.chain.trie import IncrementalTrie
from exchange import Context
from precompiles.exchange import DIGEST_SLOT, EXCHANGE_ADDRESS, encode_commands

# Store keys of the engine: E = a full snapshot (block number + engine bytes),
# e<block> = the commands the engine applied in that block, after the snapshot.
EXCHANGE_KEY = b"E"
EXCHANGE_COMMANDS = b"e"

RECENT_BLOCKS = 128


class OpenBlock:
    """The block being filled: its environment, transactions and receipts so far."""

    def __init__(self, env: BlockEnv) -> None:
        self.env = env
        self.txs: list[SignedTx] = []
        self.receipts: list[Receipt] = []
        self.by_hash: dict[bytes, int] = {}
        self.gas_used = 0
        self.log_count = 0
        self.bloom = 0
        self.miniblock_count = 0
        self.size = 0
        # Roots grow with each mini-block so that sealing stays cheap (PERFORMANCE.md 3).
        self.tx_trie = IncrementalTrie()
        self.receipt_trie = IncrementalTrie()
        self.hashed_upto = 0
        # Store records of the receipts, encoded per mini-block, not all at the seal.
        self.receipt_records: list = []
        self.body: list = []
        self.exchange_begun = False
        # The events of the exchange's block hooks (expiries, funding, maturities,
        # de-risk actions), as logs outside any transaction (see Chain.seal).
        self.system_logs: list[Log] = []


class SealedBlock:
    __slots__ = ("header", "txs", "receipts", "system_logs")

    def __init__(self, header: Header, txs: list[SignedTx], receipts: list[Receipt],
                 system_logs: list | None = None) -> None:
        self.header = header
        self.txs = txs
        self.receipts = receipts
        self.system_logs = system_logs or []


class Chain:
    def __init__(self, config, store: ChainStore, state: FlatState, head: Header) -> None:
        self.config = config
        self.chain_id = config.chain.chain_id
        self.store = store
        self.state = state
        self.head = head
        self.open: OpenBlock | None = None
        self.recent: OrderedDict[int, SealedBlock] = OrderedDict()
        self.hash_to_number: dict[bytes, int] = {}
        # tx hash -> (number, index) for the recent blocks, whose store writes may lag.
        self.recent_tx: dict[bytes, tuple[int, int]] = {}
        self.recent_system: dict[bytes, int] = {}  # system-log tx hash -> number, for the recent blocks
        self.time_offset = 0  # evm_increaseTime, seconds
        self.next_timestamp: int | None = None  # evm_setNextBlockTimestamp
        self.miniblock_number = 0  # global mini-block counter
        # Blocks with an e<number> command record since the last engine snapshot.
        self.exchange_command_blocks: list[int] = []
        self.exchange_commands_since_snapshot = 0

    # -- building -----------------------------------------------------------------------

    def open_block(self, now_seconds: int) -> OpenBlock:
        parent = self.head
        if self.next_timestamp is not None:
            timestamp = self.next_timestamp
            self.next_timestamp = None
        else:
            timestamp = max(now_seconds + self.time_offset, parent.timestamp)
        number = parent.number + 1
        env = BlockEnv(
            number=number,
            timestamp=timestamp,
            base_fee=next_base_fee(parent.base_fee, parent.gas_used, parent.gas_limit),
            gas_limit=self.config.chain.gas_limit,
            coinbase=bytes.fromhex(self.config.chain.coinbase[2:]),
            mix_hash=keccak(b"prevrandao" + parent.hash),
            prev_hashes=self._prev_hashes(),
            chain_id=self.chain_id,
        )
        self.open = OpenBlock(env)
        self._executor = Executor(self.state, env)
        self._block_preprocessing(env, parent)
        return self.open

    def _begin_exchange_block(self, block: OpenBlock) -> None:
        """Expiries and the engine's per-block tick: before the block's first
        transaction, or at its seal if it has none. Not at open: an open block
        without transactions can be discarded (evm_snapshot/revert, a new
        timestamp) and must have changed nothing."""
        block.exchange_begun = True
        runtime = self.state.exchange
        if runtime is not None:
            events = runtime.begin_block(Context(block.env.number, block.env.timestamp))
            block.system_logs.extend(Log(*runtime.log_of(e)) for e in events)

    def _block_preprocessing(self, env: BlockEnv, parent: Header) -> None:
        # EIP-2935: the history contract keeps the parent hash (py-evm's Prague does this).
        from eth.vm.forks.prague.constants import (
            HISTORY_SERVE_WINDOW, HISTORY_STORAGE_ADDRESS, HISTORY_STORAGE_CONTRACT_CODE)
        if self.state.get_code(HISTORY_STORAGE_ADDRESS) == HISTORY_STORAGE_CONTRACT_CODE:
            self.state.set_storage(HISTORY_STORAGE_ADDRESS, (env.number - 1) % HISTORY_SERVE_WINDOW,
                                   int.from_bytes(parent.hash, "big"))

    def _prev_hashes(self) -> list[bytes]:
        hashes = []
        number = self.head.number
        while number >= 0 and len(hashes) < 256:
            header = self.header(number)
            if header is None:
                break
            hashes.append(header.hash)
            number -= 1
        return hashes

    def apply(self, tx: SignedTx) -> Receipt:
        """Execute `tx` in the open block. Raises TxInvalid and changes nothing if it can't run."""
        block = self.open
        if not block.exchange_begun:
            self._begin_exchange_block(block)
        receipt = self._executor.execute(tx, block.gas_used)
        index = len(block.txs)
        receipt.tx_index = index
        receipt.block_number = block.env.number
        receipt.miniblock = self.miniblock_number
        for log in receipt.logs:
            log.log_index = block.log_count
            log.tx_index = index
            log.tx_hash = tx.hash
            log.block_number = block.env.number
            block.log_count += 1
        block.txs.append(tx)
        block.receipts.append(receipt)
        block.by_hash[tx.hash] = index
        block.gas_used = receipt.cumulative_gas_used
        block.bloom |= receipt.bloom
        block.size += len(tx.raw)
        return receipt

    def end_miniblock(self) -> None:
        """Close a mini-block: fold its items into the roots so the seal stays cheap."""
        block = self.open
        start = block.hashed_upto
        for index in range(start, len(block.txs)):
            key = rlp.encode(index)
            tx = block.txs[index]
            receipt = block.receipts[index]
            block.tx_trie.set(key, tx.raw)
            block.receipt_trie.set(key, receipt.consensus_encoding())
            block.receipt_records.append(receipt.to_record())
            block.body.append([tx.raw, tx.sender])
        block.hashed_upto = len(block.txs)
        block.tx_trie.root_hash()
        block.receipt_trie.root_hash()
        self.state.state_root()
        block.miniblock_count += 1
        self.miniblock_number += 1

    def seal(self) -> tuple[SealedBlock, list, list]:
        """Finish the open block: header, hash; returns the block and its store writes."""
        block = self.open
        if block.hashed_upto != len(block.txs):
            self.end_miniblock()
        env = block.env
        if not block.exchange_begun:
            self._begin_exchange_block(block)
        exchange_puts, exchange_deletes = self._commit_exchange(env.number)
        # System logs follow the transactions' logs: a transaction index past the
        # last one, their own transaction hash, in the block's bloom (so that
        # eth_getLogs and filters find them); not in any receipt or the receipt root.
        system_logs = block.system_logs
        if system_logs:
            tx_hash = system_tx_hash(env.number)
            for log in system_logs:
                log.log_index = block.log_count
                log.tx_index = len(block.txs)
                log.tx_hash = tx_hash
                log.block_number = env.number
                block.log_count += 1
            block.bloom |= logs_bloom(system_logs)
        header = Header()
        header.parent_hash = self.head.hash
        header.coinbase = env.coinbase
        header.state_root = self.state.state_root()
        header.tx_root = block.tx_trie.root_hash()
        header.receipt_root = block.receipt_trie.root_hash()
        header.bloom = block.bloom
        header.number = env.number
        header.gas_limit = env.gas_limit
        header.gas_used = block.gas_used
        header.timestamp = env.timestamp
        header.extra_data = b""
        header.mix_hash = env.mix_hash
        header.base_fee = env.base_fee
        header.miniblock_count = block.miniblock_count
        header.size = 0
        header.seal()
        header.size = len(header.encode()) + block.size
        sealed = SealedBlock(header, block.txs, block.receipts, system_logs)
        puts = self.store.block_puts(header, block.body, block.receipts, block.receipt_records, system_logs)
        state_puts, deletes = self.store.state_puts(self.state.take_changes(), header.number)
        puts.extend(state_puts)
        puts.extend(exchange_puts)
        deletes = list(deletes) + exchange_deletes
        self.head = header
        self.open = None
        self._executor = None
        self._remember(sealed)
        return sealed, puts, deletes

    def _commit_exchange(self, number: int) -> tuple[list, list]:
        """Put the engine's digest into the exchange account's storage (so the state
        root commits to the books), and return the store writes that keep the engine:
        this block's commands under e<number>, and now and then a full snapshot under
        E (then the command records it covers are deleted)."""
        runtime = self.state.exchange
        if runtime is None:
            return [], []
        digest = int.from_bytes(runtime.digest(), "big")
        if self.state.get_storage(EXCHANGE_ADDRESS, DIGEST_SLOT) != digest:
            self.state.set_storage(EXCHANGE_ADDRESS, DIGEST_SLOT, digest)
        commands = runtime.take_block_commands()
        puts, deletes = [], []
        if commands:
            puts.append((EXCHANGE_COMMANDS + num8(number), encode_commands(commands)))
            self.exchange_commands_since_snapshot += len(commands)
            self.exchange_command_blocks.append(number)
        if self.exchange_commands_since_snapshot >= self.config.storage.exchange_snapshot_commands:
            puts.append((EXCHANGE_KEY, num8(number) + runtime.engine.to_bytes()))
            deletes.extend(EXCHANGE_COMMANDS + num8(n) for n in self.exchange_command_blocks)
            puts = [(k, v) for k, v in puts if not k.startswith(EXCHANGE_COMMANDS)]
            self.exchange_command_blocks = []
            self.exchange_commands_since_snapshot = 0
        return puts, deletes

    def _remember(self, sealed: SealedBlock) -> None:
        self.recent[sealed.header.number] = sealed
        number = sealed.header.number
        self.hash_to_number[sealed.header.hash] = number
        recent_tx = self.recent_tx
        for index, tx in enumerate(sealed.txs):
            recent_tx[tx.hash] = (number, index)
        if sealed.system_logs:
            self.recent_system[sealed.system_logs[0].tx_hash] = number
        while len(self.recent) > RECENT_BLOCKS:
            _, old = self.recent.popitem(last=False)
            for tx in old.txs:
                recent_tx.pop(tx.hash, None)
            if old.system_logs:
                self.recent_system.pop(old.system_logs[0].tx_hash, None)

    # -- reading ------------------------------------------------------------------------

    def header(self, number: int) -> Header | None:
        block = self.recent.get(number)
        if block is not None:
            return block.header
        if number == self.head.number:
            return self.head
        return self.store.header(number)

    def number_of_hash(self, block_hash: bytes) -> int | None:
        number = self.hash_to_number.get(block_hash)
        return number if number is not None else self.store.number_of_hash(block_hash)

    def block_transactions(self, number: int) -> list[SignedTx]:
        block = self.recent.get(number)
        if block is not None:
            return block.txs
        return [decode_raw_transaction(raw, self.chain_id, sender=sender) for raw, sender in self.store.body(number)]

    def block_receipts(self, number: int) -> list[Receipt]:
        block = self.recent.get(number)
        if block is not None:
            return block.receipts
        return self.store.receipts(number)

    def block_system_logs(self, number: int) -> list[Log]:
        """The logs of a sealed block's exchange hooks (after its transactions' logs)."""
        block = self.recent.get(number)
        if block is not None:
            return block.system_logs
        return self.store.system_logs(number)

    def find_system_logs(self, tx_hash: bytes) -> int | None:
        """The sealed block whose system logs carry ``tx_hash`` (the block hooks'
        synthetic transaction), or None."""
        number = self.recent_system.get(tx_hash)
        return number if number is not None else self.store.system_tx_block(tx_hash)

    def find_transaction(self, tx_hash: bytes) -> tuple[SignedTx, Receipt, bytes] | None:
        """(tx, receipt, block hash or the pending placeholder) for an executed tx."""
        block = self.open
        if block is not None:
            index = block.by_hash.get(tx_hash)
            if index is not None:
                return block.txs[index], block.receipts[index], PENDING_BLOCK_HASH
        location = self.recent_tx.get(tx_hash) or self.store.tx_location(tx_hash)
        if location is None:
            return None
        number, index = location
        header = self.header(number)
        return self.block_transactions(number)[index], self.block_receipts(number)[index], header.hash

