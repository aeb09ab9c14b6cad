"""The world state of the chain: ours, in flat maps, with py-evm only as the interpreter.

PERFORMANCE.md point 2: py-evm's AccountDB re-encodes an account's RLP on every balance
or nonce change (~13 µs) and walks a Python trie for the root (~190 µs per changed
account). Here the state is plain dicts with an undo log, and the root is built
incrementally at seal time.

::

    sequencer fast paths ──► FlatState ◄── FlatAccountDB ◄── BlixtState (PragueState)
      (get/set_balance,         │  accounts: address -> (nonce, balance, code_hash)
       nonce, storage)          │  storage:  address -> {slot: value}
                                │  code:     code_hash -> bytes
                                │  undo log: checkpoint() / revert(cp) / commit(cp)
                                ├──► state_root(): IncrementalTrie per account storage +
                                │    one for accounts; only dirty accounts re-hashed
                                └──► take_changes(): what changed since the last call,
                                     sorted, for the lead's LevelDB writer and history

`FlatState` is the state. `FlatAccountDB` adapts it to py-evm's
`AccountDatabaseAPI`, adding what only the interpreter needs: EIP-2929 warm
addresses and slots (journaled, reset at `lock_changes`) and the storage values as
of the start of the transaction (EIP-2200/3529 SSTORE gas). `BlixtState` is
PragueState over that adapter, with an executor that trusts a sender recovered at
ingress (see `prime_sender`) and skips py-evm's eager debug strings, and with
EIP-1153 transient storage journaled in the same undo log
(`JournaledTransientStorage`).

Semantics follow py-evm's AccountDB exactly where execution can observe them (a
differential test proves it): an account exists once anything writes it, including
`touch`; an account with no nonce, balance or code is still in the trie until
EIP-161 clearing deletes it; `delete_account` also drops its storage; the adapter's
`delete_storage` (CREATE2) leaves an existing, empty-storaged account behind.

Errors: `ValueError` for out-of-range values written through the fast methods,
`KeyError` for an unknown checkpoint, py-evm's `MissingBytecode` for a code hash
without code.
"""

from __future__ import annotations

from typing import (
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    NamedTuple,
    Optional,
    Set,
    Tuple,
)

from eth.abc import (
    AccountDatabaseAPI,
    ExecutionContextAPI,
    MetaWitnessAPI,
    SignedTransactionAPI,
    TransientStorageAPI,
)
from eth.constants import CREATE_CONTRACT_ADDRESS
from eth.db.journal import get_next_checkpoint as _next_checkpoint_id
from eth.db.witness import MetaWitness
from eth.vm.forks.prague.state import PragueState, PragueTransactionExecutor
from eth.vm.forks.spurious_dragon._utils import collect_touched_accounts
from eth.vm.interrupt import MissingBytecode
from eth.vm.message import Message
from eth._utils.address import generate_contract_address
from sha3 import keccak_256

from node.chain.trie import BLANK_ROOT, IncrementalTrie, _rlp_bytes, _rlp_list
from precompiles.evm import BlixtComputation

EMPTY_CODE_HASH = keccak_256(b"").digest()
"""keccak(b""): the code hash of an account without code."""

UINT256_CEILING = 2**256
UINT64_CEILING = 2**64

# Undo-log entry kinds. An entry is a tuple whose first item is the kind.
_ACCOUNT = 0  # (kind, address, previous account tuple or None)
_SLOT = 1  # (kind, address, slot, previous value)
_STORAGE = 2  # (kind, address, previous storage dict or None) — a wipe
_CALLBACK = 3  # (kind, function, argument) — call function(argument) on revert


class AccountRecord(NamedTuple):
    nonce: int
    balance: int
    code_hash: bytes


class StateChanges(NamedTuple):
    """Everything that changed between two `take_changes` calls, in sorted order.

    - accounts: (address, AccountRecord) or (address, None) for a deleted account,
      sorted by address.
    - storage: (address, slot, value) sorted by address then slot; value 0 means the
      slot is now empty. A wiped or deleted account lists every slot it had as 0.
    - code: (code_hash, code) for code blobs first seen since the last call, sorted
      by hash. Code is content-addressed and never deleted.

    A key may be listed although its value ended where it started (e.g. written then
    reverted): the value given is always the current one, so replaying is exact.
    """

    accounts: Tuple[Tuple[bytes, Optional[AccountRecord]], ...]
    storage: Tuple[Tuple[bytes, int, int], ...]
    code: Tuple[Tuple[bytes, bytes], ...]

    def __bool__(self) -> bool:
        return bool(self.accounts or self.storage or self.code)


class FlatState:
    """Accounts, storage and code in dicts, journaled, with an incremental state root.

    Reads and writes are plain dict operations (a few hundred ns). Writes are undone
    by `revert` only while a checkpoint is open; with none open they are not logged.
    Addresses are 20-byte `bytes`, slots and values `int`s; callers hand in valid
    values (balances and values in [0, 2**256), nonces in [0, 2**64)) — the fast
    setters check ranges and raise ValueError otherwise.
    """

    __slots__ = (
        "_accounts",
        "_storage",
        "_code",
        "_undo",
        "_checkpoints",
        "_dirty_accounts",
        "_dirty_slots",
        "_unreported_accounts",
        "_unreported_slots",
        "_reported_unrooted_accounts",
        "_reported_unrooted_slots",
        "_new_code",
        "_account_trie",
        "_storage_tries",
        "_storage_roots",
        "_hashed_addresses",
        "_root",
        "exchange",
    )

    def __init__(self) -> None:
        self._accounts: Dict[bytes, Tuple[int, int, bytes]] = {}
        self._storage: Dict[bytes, Dict[int, int]] = {}
        self._code: Dict[bytes, bytes] = {}
        self._undo: List[tuple] = []
        self._checkpoints: List[Tuple[int, int]] = []  # (checkpoint id, undo length)
        # Change tracking, three ways, so that a write costs one set.add:
        # dirty = written since both the last state_root() and take_changes();
        # unreported = hashed by state_root() but not yet reported;
        # reported_unrooted = reported by take_changes() but not yet hashed.
        self._dirty_accounts: Set[bytes] = set()
        self._dirty_slots: Dict[bytes, Set[int]] = {}
        self._unreported_accounts: Set[bytes] = set()
        self._unreported_slots: Dict[bytes, Set[int]] = {}
        self._reported_unrooted_accounts: Set[bytes] = set()
        self._reported_unrooted_slots: Dict[bytes, Set[int]] = {}
        self._new_code: Set[bytes] = set()
        self._account_trie = IncrementalTrie()
        self._storage_tries: Dict[bytes, IncrementalTrie] = {}
        self._storage_roots: Dict[bytes, bytes] = {}
        self._hashed_addresses: Dict[bytes, str] = {}
        self._root = BLANK_ROOT
        # The exchange precompile's runtime (precompiles.exchange.ExchangeRuntime) on
        # the head state; None elsewhere (historical states answer with a revert).
        self.exchange = None

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_records(
        cls,
        accounts: Iterable[Tuple[bytes, int, int, bytes]],
        storage: Iterable[Tuple[bytes, int, int]] = (),
        code: Iterable[Tuple[bytes, bytes]] = (),
    ) -> "FlatState":
        """A state holding these records, e.g. a snapshot read back from disk.

        accounts: (address, nonce, balance, code_hash); storage: (address, slot,
        value) with value != 0, for accounts listed in `accounts`; code: (code_hash,
        code). Loading is not a change: `take_changes()` starts empty. The first
        `state_root()` hashes everything once (tries are built lazily).
        """
        state = cls()
        state_accounts = state._accounts
        for address, nonce, balance, code_hash in accounts:
            state_accounts[address] = (nonce, balance, code_hash)
        state_storage = state._storage
        for address, slot, value in storage:
            if value:
                if address not in state_accounts:
                    raise ValueError(f"storage for unknown account 0x{address.hex()}")
                slots = state_storage.get(address)
                if slots is None:
                    slots = state_storage[address] = {}
                slots[slot] = value
        state._code.update(code)
        # Every account is new to the root but already persisted: owed to the root,
        # not to take_changes().
        state._reported_unrooted_accounts.update(state_accounts)
        return state

    def iter_accounts(self) -> Iterator[Tuple[bytes, int, int, bytes]]:
        """All accounts as (address, nonce, balance, code_hash), sorted by address."""
        accounts = self._accounts
        for address in sorted(accounts):
            nonce, balance, code_hash = accounts[address]
            yield address, nonce, balance, code_hash

    def iter_storage(self) -> Iterator[Tuple[bytes, int, int]]:
        """All non-zero storage as (address, slot, value), sorted."""
        for address in sorted(self._storage):
            slots = self._storage[address]
            for slot in sorted(slots):
                yield address, slot, slots[slot]

    def iter_code(self) -> Iterator[Tuple[bytes, bytes]]:
        """All code blobs as (code_hash, code), sorted by hash."""
        for code_hash in sorted(self._code):
            yield code_hash, self._code[code_hash]

    # ------------------------------------------------------------------- reads

    def account_exists(self, address: bytes) -> bool:
        return address in self._accounts

    def get_account(self, address: bytes) -> Optional[AccountRecord]:
        account = self._accounts.get(address)
        return None if account is None else AccountRecord(*account)

    def get_balance(self, address: bytes) -> int:
        account = self._accounts.get(address)
        return 0 if account is None else account[1]

    def get_nonce(self, address: bytes) -> int:
        account = self._accounts.get(address)
        return 0 if account is None else account[0]

    def get_code_hash(self, address: bytes) -> bytes:
        account = self._accounts.get(address)
        return EMPTY_CODE_HASH if account is None else account[2]

    def get_code(self, address: bytes) -> bytes:
        account = self._accounts.get(address)
        if account is None or account[2] == EMPTY_CODE_HASH:
            return b""
        try:
            return self._code[account[2]]
        except KeyError:
            raise MissingBytecode(account[2]) from None

    def get_code_by_hash(self, code_hash: bytes) -> bytes:
        if code_hash == EMPTY_CODE_HASH:
            return b""
        return self._code[code_hash]

    def get_storage(self, address: bytes, slot: int) -> int:
        slots = self._storage.get(address)
        return 0 if slots is None else slots.get(slot, 0)

    def account_is_empty(self, address: bytes) -> bool:
        """EIP-161 empty: no nonce, no balance, no code (absent accounts are empty)."""
        account = self._accounts.get(address)
        return account is None or (
            account[0] == 0 and account[1] == 0 and account[2] == EMPTY_CODE_HASH
        )

    def __len__(self) -> int:
        return len(self._accounts)

    # ------------------------------------------------------------------ writes

    def set_balance(self, address: bytes, balance: int) -> None:
        if not 0 <= balance < UINT256_CEILING:
            raise ValueError(f"balance out of range: {balance}")
        accounts = self._accounts
        account = accounts.get(address)
        if self._checkpoints:
            self._undo.append((_ACCOUNT, address, account))
        if account is None:
            accounts[address] = (0, balance, EMPTY_CODE_HASH)
        else:
            accounts[address] = (account[0], balance, account[2])
        self._dirty_accounts.add(address)

    def add_balance(self, address: bytes, delta: int) -> None:
        """balance += delta (delta may be negative); ValueError if it would go below 0."""
        self.set_balance(address, self.get_balance(address) + delta)

    def set_nonce(self, address: bytes, nonce: int) -> None:
        if not 0 <= nonce < UINT64_CEILING:
            raise ValueError(f"nonce out of range: {nonce}")
        accounts = self._accounts
        account = accounts.get(address)
        if self._checkpoints:
            self._undo.append((_ACCOUNT, address, account))
        if account is None:
            accounts[address] = (nonce, 0, EMPTY_CODE_HASH)
        else:
            accounts[address] = (nonce, account[1], account[2])
        self._dirty_accounts.add(address)

    def set_code(self, address: bytes, code: bytes) -> None:
        code_hash = keccak_256(code).digest()
        account = self._accounts.get(address)
        if account is not None and account[2] == code_hash:
            return  # py-evm re-sets system contract code on every State: no change
        if code and code_hash not in self._code:
            self._code[code_hash] = code
            self._new_code.add(code_hash)
        self._set_code_hash(address, account, code_hash)

    def delete_code(self, address: bytes) -> None:
        self._set_code_hash(address, self._accounts.get(address), EMPTY_CODE_HASH)

    def _set_code_hash(self, address: bytes, account, code_hash: bytes) -> None:
        if self._checkpoints:
            self._undo.append((_ACCOUNT, address, account))
        if account is None:
            self._accounts[address] = (0, 0, code_hash)
        else:
            self._accounts[address] = (account[0], account[1], code_hash)
        self._dirty_accounts.add(address)

    def touch(self, address: bytes) -> None:
        """Make the account exist (empty if it did not): py-evm's touch_account."""
        if address not in self._accounts:
            if self._checkpoints:
                self._undo.append((_ACCOUNT, address, None))
            self._accounts[address] = (0, 0, EMPTY_CODE_HASH)
            self._dirty_accounts.add(address)

    def set_storage(self, address: bytes, slot: int, value: int) -> None:
        """Write a slot; 0 empties it. Non-zero storage on an absent account creates
        the account (py-evm would create it when it next computes the root)."""
        slots = self._storage.get(address)
        if slots is None:
            if not value:
                return
            old = 0
        else:
            old = slots.get(slot, 0)
            if old == value:
                return
        if value:
            if not 0 < value < UINT256_CEILING:
                raise ValueError(f"storage value out of range: {value}")
            if address not in self._accounts:
                self.touch(address)
            if slots is None:
                slots = self._storage[address] = {}
            slots[slot] = value
        else:
            del slots[slot]
        if self._checkpoints:
            self._undo.append((_SLOT, address, slot, old))
        dirty = self._dirty_slots.get(address)
        if dirty is None:
            self._dirty_slots[address] = {slot}
        else:
            dirty.add(slot)
        self._dirty_accounts.add(address)

    def clear_storage(self, address: bytes) -> None:
        """Empty the account's storage; the account itself stays as it is."""
        slots = self._storage.pop(address, None)
        if slots is None:
            return
        if self._checkpoints:
            self._undo.append((_STORAGE, address, slots))
        if slots:
            dirty = self._dirty_slots.get(address)
            if dirty is None:
                self._dirty_slots[address] = set(slots)
            else:
                dirty.update(slots)
        # The storage trie is rebuilt from the dict at the next root.
        self._storage_tries.pop(address, None)
        self._storage_roots.pop(address, None)
        self._dirty_accounts.add(address)

    def delete_account(self, address: bytes) -> None:
        """Remove the account and its storage (selfdestruct, EIP-161 clearing)."""
        self.clear_storage(address)
        account = self._accounts.pop(address, None)
        if account is not None:
            if self._checkpoints:
                self._undo.append((_ACCOUNT, address, account))
            self._dirty_accounts.add(address)

    # ----------------------------------------------------------------- journal

    def checkpoint(self) -> int:
        """Open a checkpoint; `revert(cp)` undoes every write made after it."""
        # Ids come from py-evm's own counter: py-evm journals that see our ids
        # (CancunState records them in its transient storage) must never see one
        # twice, and they also draw from that counter.
        checkpoint_id = _next_checkpoint_id()
        self._checkpoints.append((checkpoint_id, len(self._undo)))
        return checkpoint_id

    def revert(self, checkpoint_id: int) -> None:
        """Undo every write since `checkpoint_id`; it and later checkpoints close."""
        undo_length = self._close(checkpoint_id)
        undo = self._undo
        accounts = self._accounts
        storage = self._storage
        while len(undo) > undo_length:
            entry = undo.pop()
            kind = entry[0]
            if kind == _ACCOUNT:
                address, account = entry[1], entry[2]
                if account is None:
                    accounts.pop(address, None)
                else:
                    accounts[address] = account
                self._dirty_accounts.add(address)
            elif kind == _SLOT:
                address, slot, value = entry[1], entry[2], entry[3]
                slots = storage.get(address)
                if slots is None:
                    slots = storage[address] = {}
                if value:
                    slots[slot] = value
                else:
                    slots.pop(slot, None)
                dirty = self._dirty_slots.get(address)
                if dirty is None:
                    self._dirty_slots[address] = {slot}
                else:
                    dirty.add(slot)
                self._dirty_accounts.add(address)
            elif kind == _STORAGE:
                address, slots = entry[1], entry[2]
                storage[address] = slots
                self._storage_tries.pop(address, None)
                self._storage_roots.pop(address, None)
                self._dirty_accounts.add(address)
            else:
                entry[1](entry[2])
        if not self._checkpoints:
            undo.clear()

    def commit(self, checkpoint_id: int) -> None:
        """Keep the writes since `checkpoint_id`; an outer checkpoint can still undo
        them. It and later checkpoints close."""
        self._close(checkpoint_id)
        if not self._checkpoints:
            self._undo.clear()

    def add_undo(self, undo: Callable[[object], None], argument: object) -> None:
        """Journal `undo(argument)` to run if an open checkpoint is reverted.

        For state kept beside this one that must revert with it (EIP-2929 warm sets,
        the exchange engine's undo log). No-op when no checkpoint is open.
        """
        if self._checkpoints:
            self._undo.append((_CALLBACK, undo, argument))

    @property
    def checkpoint_depth(self) -> int:
        return len(self._checkpoints)

    def _close(self, checkpoint_id: int) -> int:
        checkpoints = self._checkpoints
        for position in range(len(checkpoints) - 1, -1, -1):
            if checkpoints[position][0] == checkpoint_id:
                undo_length = checkpoints[position][1]
                del checkpoints[position:]
                return undo_length
        raise KeyError(f"unknown or closed checkpoint {checkpoint_id}")

    # -------------------------------------------------------------------- root

    @property
    def last_state_root(self) -> bytes:
        """The root as of the last `state_root()` call (stale if writes followed)."""
        return self._root

    def state_root(self) -> bytes:
        """The Ethereum state root; re-hashes only accounts changed since last call.

        Equals py-evm's `AccountDB.make_state_root()` for the same state.
        """
        dirty_accounts = self._dirty_accounts
        reported_accounts = self._reported_unrooted_accounts
        if not dirty_accounts and not reported_accounts:
            return self._root
        dirty_slots = self._dirty_slots
        reported_slots = self._reported_unrooted_slots
        to_hash = dirty_accounts | reported_accounts if reported_accounts else dirty_accounts
        accounts = self._accounts
        all_storage = self._storage
        storage_tries = self._storage_tries
        storage_roots = self._storage_roots
        hashed_addresses = self._hashed_addresses
        account_trie = self._account_trie
        for address in to_hash:
            path = hashed_addresses.get(address)
            if path is None:
                path = hashed_addresses[address] = keccak_256(address).hexdigest()
            account = accounts.get(address)
            if account is None:
                account_trie.delete_path(path)
                storage_tries.pop(address, None)
                storage_roots.pop(address, None)
                # Touched-and-cleared addresses (EIP-161) must not pile up here.
                del hashed_addresses[address]
                continue
            slots = all_storage.get(address)
            trie = storage_tries.get(address)
            if trie is None:
                # New to the root, or wiped since: build from the whole dict.
                if slots:
                    trie = storage_tries[address] = IncrementalTrie()
                    for slot, value in slots.items():
                        trie.set_path(_slot_path(slot), _rlp_uint(value))
                    storage_root = storage_roots[address] = trie.root_hash()
                else:
                    storage_root = BLANK_ROOT
            else:
                changed = dirty_slots.get(address)
                also_changed = reported_slots.get(address)
                if also_changed:
                    changed = changed | also_changed if changed else also_changed
                if changed:
                    get = slots.get if slots is not None else {}.get
                    for slot in changed:
                        value = get(slot, 0)
                        trie.set_path(_slot_path(slot), _rlp_uint(value) if value else b"")
                    storage_root = storage_roots[address] = trie.root_hash()
                else:
                    storage_root = storage_roots.get(address, BLANK_ROOT)
            nonce, balance, code_hash = account
            account_trie.set_path(
                path,
                _rlp_list(
                    _rlp_uint(nonce)
                    + _rlp_uint(balance)
                    + b"\xa0"
                    + storage_root
                    + b"\xa0"
                    + code_hash
                ),
            )
        self._root = account_trie.root_hash()
        # What was hashed but not yet reported goes on to take_changes().
        self._unreported_accounts.update(dirty_accounts)
        _merge_slots(self._unreported_slots, dirty_slots)
        self._dirty_accounts = set()
        self._dirty_slots = {}
        self._reported_unrooted_accounts = set()
        self._reported_unrooted_slots = {}
        return self._root

    # ----------------------------------------------------------------- changes

    def take_changes(self) -> StateChanges:
        """What changed since the previous call, with current values, sorted."""
        accounts = self._accounts
        all_storage = self._storage
        changed_accounts = self._unreported_accounts | self._dirty_accounts
        account_changes = tuple(
            (address, None if address not in accounts else AccountRecord(*accounts[address]))
            for address in sorted(changed_accounts)
        )
        changed_slots: Dict[bytes, Set[int]] = {}
        _merge_slots(changed_slots, self._unreported_slots)
        _merge_slots(changed_slots, self._dirty_slots)
        storage_changes = []
        for address in sorted(changed_slots):
            current = all_storage.get(address) or {}
            for slot in sorted(changed_slots[address]):
                storage_changes.append((address, slot, current.get(slot, 0)))
        code = self._code
        code_changes = tuple((code_hash, code[code_hash]) for code_hash in sorted(self._new_code))
        # What the root has not hashed yet stays owed to it, but is now reported.
        self._reported_unrooted_accounts.update(self._dirty_accounts)
        _merge_slots(self._reported_unrooted_slots, self._dirty_slots)
        self._dirty_accounts = set()
        self._dirty_slots = {}
        self._unreported_accounts = set()
        self._unreported_slots = {}
        self._new_code = set()
        return StateChanges(account_changes, tuple(storage_changes), code_changes)


def _merge_slots(into: Dict[bytes, Set[int]], source: Dict[bytes, Set[int]]) -> None:
    for address, slots in source.items():
        merged = into.get(address)
        if merged is None:
            into[address] = set(slots)
        else:
            merged.update(slots)


def _slot_path(slot: int) -> str:
    return keccak_256(slot.to_bytes(32, "big")).hexdigest()


def _rlp_uint(value: int) -> bytes:
    if value == 0:
        return b"\x80"
    if value < 0x80:
        return bytes((value,))
    return _rlp_bytes(value.to_bytes((value.bit_length() + 7) // 8, "big"))


# ======================================================================== py-evm


class FlatAccountDB(AccountDatabaseAPI):
    """py-evm's account database, over a FlatState.

    Adds only what the interpreter needs beyond the state itself: the EIP-2929 warm
    sets (reverting with the call frame, cleared at `lock_changes`), and each slot's
    value at the start of the transaction for SSTORE gas (`get_storage(...,
    from_journal=False)`). `record`/`discard`/`commit` are FlatState checkpoints.
    `state_root` is the root of the last `make_state_root()` — cheap, because
    py-evm reads it on every snapshot; `make_state_root()` computes the real one.
    """

    def __init__(self, flat: Optional[FlatState] = None, state_root: bytes = BLANK_ROOT) -> None:
        # AccountDatabaseAPI's constructor takes (db, state_root); there is no py-evm
        # database here: the FlatState is the state (a fresh one when none is given).
        if not isinstance(flat, FlatState):
            flat = FlatState()
        self.flat = flat
        self._warm: Set[object] = set()  # addresses, and (address, slot) pairs
        self._original_storage: Dict[Tuple[bytes, int], int] = {}
        self._storage_before_wipe: Dict[bytes, Dict[int, int]] = {}

    # --- root

    @property
    def state_root(self) -> bytes:
        return self.flat._root

    @state_root.setter
    def state_root(self, value: bytes) -> None:
        # State.revert() writes back the root it read at snapshot(); the undo log is
        # what actually reverts, so the value is only a label here.
        pass

    def has_root(self, state_root: bytes) -> bool:
        return state_root == self.flat._root

    def make_state_root(self) -> bytes:
        return self.flat.state_root()

    def persist(self) -> MetaWitnessAPI:
        # Persisting is the lead's LevelDB writer's job (FlatState.take_changes()).
        self.flat.state_root()
        return MetaWitness(set(), {})

    # --- storage

    def get_storage(self, address: bytes, slot: int, from_journal: bool = True) -> int:
        if from_journal:
            slots = self.flat._storage.get(address)
            return 0 if slots is None else slots.get(slot, 0)
        # The value at the start of the transaction (EIP-2200 "original value").
        original = self._original_storage.get((address, slot))
        if original is not None:
            return original
        before_wipe = self._storage_before_wipe.get(address)
        if before_wipe is not None:
            return before_wipe.get(slot, 0)
        return self.flat.get_storage(address, slot)

    def set_storage(self, address: bytes, slot: int, value: int) -> None:
        key = (address, slot)
        originals = self._original_storage
        if key not in originals:
            before_wipe = self._storage_before_wipe.get(address)
            originals[key] = (
                before_wipe.get(slot, 0) if before_wipe is not None
                else self.flat.get_storage(address, slot)
            )
        self.flat.set_storage(address, slot, value)

    def delete_storage(self, address: bytes) -> None:
        self._remember_storage_before_wipe(address)
        # py-evm's AccountDB writes a blank storage root into the account, which
        # creates it when absent.
        self.flat.touch(address)
        self.flat.clear_storage(address)

    def _remember_storage_before_wipe(self, address: bytes) -> None:
        if address not in self._storage_before_wipe:
            self._storage_before_wipe[address] = self.flat._storage.get(address) or {}

    def is_storage_warm(self, address: bytes, slot: int) -> bool:
        return (address, slot) in self._warm

    def mark_storage_warm(self, address: bytes, slot: int) -> None:
        key = (address, slot)
        warm = self._warm
        if key not in warm:
            warm.add(key)
            # Bound to this transaction's set: lock_changes() replaces it.
            self.flat.add_undo(warm.discard, key)

    # --- balance, nonce

    def get_balance(self, address: bytes) -> int:
        account = self.flat._accounts.get(address)
        return 0 if account is None else account[1]

    def set_balance(self, address: bytes, balance: int) -> None:
        self.flat.set_balance(address, balance)

    def get_nonce(self, address: bytes) -> int:
        account = self.flat._accounts.get(address)
        return 0 if account is None else account[0]

    def set_nonce(self, address: bytes, nonce: int) -> None:
        self.flat.set_nonce(address, nonce)

    def increment_nonce(self, address: bytes) -> None:
        self.flat.set_nonce(address, self.get_nonce(address) + 1)

    # --- code

    def get_code(self, address: bytes) -> bytes:
        return self.flat.get_code(address)

    def set_code(self, address: bytes, code: bytes) -> None:
        self.flat.set_code(address, code)

    def get_code_hash(self, address: bytes) -> bytes:
        account = self.flat._accounts.get(address)
        return EMPTY_CODE_HASH if account is None else account[2]

    def delete_code(self, address: bytes) -> None:
        self.flat.delete_code(address)

    # --- accounts

    def account_has_code_or_nonce(self, address: bytes) -> bool:
        account = self.flat._accounts.get(address)
        return account is not None and (account[0] != 0 or account[2] != EMPTY_CODE_HASH)

    def delete_account(self, address: bytes) -> None:
        self._remember_storage_before_wipe(address)
        self.flat.delete_account(address)

    def account_exists(self, address: bytes) -> bool:
        return address in self.flat._accounts

    def touch_account(self, address: bytes) -> None:
        self.flat.touch(address)

    def account_is_empty(self, address: bytes) -> bool:
        return self.flat.account_is_empty(address)

    def is_address_warm(self, address: bytes) -> bool:
        return address in self._warm

    def mark_address_warm(self, address: bytes) -> None:
        warm = self._warm
        if address not in warm:
            warm.add(address)
            self.flat.add_undo(warm.discard, address)

    # --- journal

    def record(self) -> int:
        return self.flat.checkpoint()

    def discard(self, checkpoint: int) -> None:
        self.flat.revert(checkpoint)

    def commit(self, checkpoint: int) -> None:
        self.flat.commit(checkpoint)

    def lock_changes(self) -> None:
        """A transaction boundary: forget warm sets and start-of-transaction values."""
        self._warm = set()
        self._original_storage = {}
        self._storage_before_wipe = {}


# ----------------------------------------------------------------- the EVM state


def prime_sender(transaction: SignedTransactionAPI, sender: bytes) -> SignedTransactionAPI:
    """Hand py-evm a sender recovered (and so signature-checked) at ingress.

    py-evm's `transaction.sender` is a `cached_property` (the `cached_property`
    package, which stores into the instance `__dict__` under "sender"); setting
    that entry makes every later `.sender` a dict hit instead of a ~70 µs recovery.
    py-evm's executor also calls `transaction.validate()`, which re-checks the
    signature (recover + verify, another ~140 µs) through
    `check_signature_validity()` on the signed payload (the inner object of a typed
    transaction); an instance attribute shadows that method with a no-op. Every other
    field check in `validate()` (ranges, low-s, intrinsic gas) still runs.

    Only call this with a sender that was recovered from this transaction's own
    signature (e.g. coincurve `PublicKey.from_signature_and_message` at ingress);
    returns the transaction for chaining.
    """
    transaction.__dict__["sender"] = sender
    signed_payload = getattr(transaction, "_inner", transaction)
    signed_payload.__dict__["check_signature_validity"] = _signature_checked_at_ingress
    return transaction


def _signature_checked_at_ingress() -> None:
    return None


class BlixtTransactionExecutor(PragueTransactionExecutor):
    """Prague's executor without the eager debug strings py-evm formats per tx.

    py-evm's `build_evm_message` formats a debug2 line (repr of the transaction,
    keccak of its data) whether or not debug logging is on: ~17–20 µs per tx
    (PERFORMANCE.md); `finalize_computation` formats two more. These are the same
    steps (Cancun's message building with Prague's delegation-aware code lookup and
    authorization refunds; Frontier's fee settlement with EIP-161 clearing), minus
    the strings. The differential tests hold them to stock py-evm.
    """

    def build_evm_message(self, transaction: SignedTransactionAPI) -> Message:
        vm_state = self.vm_state
        sender = transaction.sender
        # Blob transactions are not accepted by Blixt; their data fee is 0 here.
        gas_fee = transaction.gas * vm_state.get_gas_price(transaction)
        if transaction.type_id == 3:  # BLOB_TX_TYPE: keep py-evm's behaviour
            gas_fee += self.calc_data_fee(transaction)
        vm_state.delta_balance(sender, -gas_fee)
        vm_state.increment_nonce(sender)
        msg_refund = self.calc_message_refund(transaction)
        message_gas = transaction.gas - transaction.intrinsic_gas
        to = transaction.to
        if to == CREATE_CONTRACT_ADDRESS:
            contract_address = generate_contract_address(sender, vm_state.get_nonce(sender) - 1)
            data = b""
            code = transaction.data
            is_delegation = False
        else:
            contract_address = None
            data = transaction.data
            code, delegation_address = self.get_code_at_address(to)
            is_delegation = delegation_address is not None
        return Message(
            gas=message_gas,
            to=to,
            sender=sender,
            value=transaction.value,
            data=data,
            code=code,
            create_address=contract_address,
            refund=msg_refund,
            is_delegation=is_delegation,
        )


    def finalize_computation(self, transaction: SignedTransactionAPI, computation):
        # Frontier's fee settlement + Spurious Dragon's EIP-161 clearing, as py-evm
        # composes them for Prague, minus their eagerly formatted debug strings.
        vm_state = self.vm_state
        gas_price = vm_state.get_transaction_context(transaction).gas_price
        gas_remaining = computation.get_gas_remaining()
        gas_used = transaction.gas - gas_remaining
        gas_refund = self.calculate_gas_refund(computation, gas_used)
        computation.data_floor_gas = self.calc_data_floor_gas(transaction, gas_used, gas_refund)
        refund_amount = (gas_refund + gas_remaining - computation.data_floor_gas) * gas_price
        if refund_amount:
            vm_state.delta_balance(computation.msg.sender, refund_amount)
        gas_used = transaction.gas - gas_remaining - gas_refund + computation.data_floor_gas
        # EIP-161: the coinbase is touched even when the fee is zero.
        vm_state.delta_balance(vm_state.coinbase, gas_used * vm_state.get_tip(transaction))
        for account in computation.get_accounts_for_deletion():
            vm_state.delete_account(account)
        for account in collect_touched_accounts(computation):
            if vm_state.account_exists(account) and vm_state.account_is_empty(account):
                vm_state.delete_account(account)
        return computation


class BlixtState(PragueState):
    """py-evm's Prague state over our FlatState (through a FlatAccountDB).

    Construct with ``BlixtState(account_db, execution_context)``; no py-evm database,
    no state root. `apply_transaction(tx)` locks the previous transaction's changes
    first (as py-evm's VM does), runs the transaction and returns the computation;
    call `lock_changes()` after it too if you read warm sets or original values.
    """

    account_db_class = FlatAccountDB
    transaction_executor_class = BlixtTransactionExecutor
    computation_class = BlixtComputation

    def __init__(self, account_db: FlatAccountDB, execution_context: ExecutionContextAPI) -> None:
        self._db = None
        self.execution_context = execution_context
        self._account_db = account_db
        self._transient_storage = JournaledTransientStorage(account_db.flat)
        self.set_system_contracts()

    @property
    def flat(self) -> FlatState:
        return self._account_db.flat

    def apply_transaction(self, transaction: SignedTransactionAPI):
        self._account_db.lock_changes()
        return super().apply_transaction(transaction)


class JournaledTransientStorage(TransientStorageAPI):
    """EIP-1153 transient storage whose reverts ride on the FlatState undo log.

    py-evm's TransientStorage keeps a JournalDB whose committed checkpoints and
    per-transaction clears are never dropped: a state that lives for many
    transactions would grow by one changeset per transaction. Here a write logs its
    undo in the FlatState (bound to this transaction's dict, so an undo that runs
    after `clear()` cannot leak a value into a later transaction), and
    record/commit/discard have nothing left to do.
    """

    __slots__ = ("_flat", "_values")

    def __init__(self, flat: FlatState) -> None:
        self._flat = flat
        self._values: Dict[Tuple[bytes, int], bytes] = {}

    def get_transient_storage(self, address: bytes, slot: int) -> bytes:
        return self._values.get((address, slot), b"")

    def set_transient_storage(self, address: bytes, slot: int, value: bytes) -> None:
        key = (address, slot)
        values = self._values
        self._flat.add_undo(_restore_transient, (values, key, values.get(key)))
        values[key] = value

    def record(self, checkpoint: int) -> None:
        pass

    def commit(self, checkpoint: int) -> None:
        pass

    def discard(self, checkpoint: int) -> None:
        pass

    def clear(self) -> None:
        self._values = {}


def _restore_transient(entry: Tuple[dict, Tuple[bytes, int], Optional[bytes]]) -> None:
    values, key, previous = entry
    if previous is None:
        values.pop(key, None)
    else:
        values[key] = previous
