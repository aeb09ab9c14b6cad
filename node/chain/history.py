"""A read-only view of the state at the end of a sealed block, for eth_call and
eth_estimateGas at an explicit block number.

It is a FlatState whose account and storage maps fall back, for keys they do not
hold, to the store's history (`y`/`z` keys, written at every seal). What a call
writes lands in the maps and shadows the history; the view is thrown away after the
call. Deleted keys are remembered so that a deletion is not undone by the fallback.
"""
from __future__ import annotations

from node.chain.state import FlatState
from node.chain.store import ChainStore


class _HistoricAccounts(dict):
    def __init__(self, store: ChainStore, number: int) -> None:
        super().__init__()
        self._store = store
        self._number = number
        self._gone: set[bytes] = set()

    def _load(self, address: bytes) -> None:
        if address in self._gone or dict.__contains__(self, address):
            return
        record = self._store.account_at(address, self._number)
        if record is None:
            self._gone.add(address)
        else:
            dict.__setitem__(self, address, record)

    def get(self, address, default=None):
        self._load(address)
        return dict.get(self, address, default)

    def __contains__(self, address) -> bool:
        self._load(address)
        return dict.__contains__(self, address)

    def __getitem__(self, address):
        self._load(address)
        return dict.__getitem__(self, address)

    def __setitem__(self, address, value) -> None:
        self._gone.discard(address)
        dict.__setitem__(self, address, value)

    def __delitem__(self, address) -> None:
        dict.__delitem__(self, address)
        self._gone.add(address)

    def pop(self, address, *default):
        self._load(address)
        self._gone.add(address)
        return dict.pop(self, address, *default)


class _HistoricSlots(dict):
    def __init__(self, store: ChainStore, number: int, address: bytes) -> None:
        super().__init__()
        self._store, self._number, self._address = store, number, address
        self._gone: set[int] = set()

    def _load(self, slot: int) -> None:
        if slot in self._gone or dict.__contains__(self, slot):
            return
        value = self._store.storage_at(self._address, slot, self._number)
        if value:
            dict.__setitem__(self, slot, value)
        else:
            self._gone.add(slot)

    def get(self, slot, default=None):
        self._load(slot)
        return dict.get(self, slot, default)

    def __contains__(self, slot) -> bool:
        self._load(slot)
        return dict.__contains__(self, slot)

    def __getitem__(self, slot):
        self._load(slot)
        return dict.__getitem__(self, slot)

    def __setitem__(self, slot, value) -> None:
        self._gone.discard(slot)
        dict.__setitem__(self, slot, value)

    def __delitem__(self, slot) -> None:
        dict.__delitem__(self, slot)
        self._gone.add(slot)

    def pop(self, slot, *default):
        self._load(slot)
        self._gone.add(slot)
        return dict.pop(self, slot, *default)


class _HistoricStorage(dict):
    """address -> slots; an account's slots fall back to history one slot at a time."""

    def __init__(self, store: ChainStore, number: int, accounts: _HistoricAccounts) -> None:
        super().__init__()
        self._store, self._number, self._accounts = store, number, accounts
        self._wiped: set[bytes] = set()

    def _slots(self, address: bytes):
        if not dict.__contains__(self, address) and address not in self._wiped:
            if address in self._accounts:
                dict.__setitem__(self, address, _HistoricSlots(self._store, self._number, address))
        return dict.get(self, address)

    def get(self, address, default=None):
        slots = self._slots(address)
        return default if slots is None else slots

    def __contains__(self, address) -> bool:
        return self._slots(address) is not None

    def __getitem__(self, address):
        slots = self._slots(address)
        if slots is None:
            raise KeyError(address)
        return slots

    def __delitem__(self, address) -> None:
        self._wiped.add(address)
        if dict.__contains__(self, address):
            dict.__delitem__(self, address)

    def pop(self, address, *default):
        self._wiped.add(address)
        return dict.pop(self, address, *default)


def state_at(store: ChainStore, number: int) -> FlatState:
    """A throw-away state equal to the end of block `number`, loaded lazily."""
    state = FlatState()
    accounts = _HistoricAccounts(store, number)
    state._accounts = accounts
    state._storage = _HistoricStorage(store, number, accounts)
    state._code = _HistoricCode(store)
    return state


class _HistoricCode(dict):
    def __init__(self, store: ChainStore) -> None:
        super().__init__()
        self._store = store

    def __getitem__(self, code_hash):
        if not dict.__contains__(self, code_hash):
            code = self._store.code(code_hash)
            if code is None:
                raise KeyError(code_hash)
            dict.__setitem__(self, code_hash, code)
        return dict.__getitem__(self, code_hash)

    def get(self, code_hash, default=None):
        try:
            return self[code_hash]
        except KeyError:
            return default

    def __contains__(self, code_hash) -> bool:
        return self.get(code_hash) is not None
