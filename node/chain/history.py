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


class _Fallback(dict):
    """A dict that loads a key it lacks with `load(key)` (None = absent), once, and
    remembers deletions so that history does not bring a deleted key back."""

    def __init__(self, load) -> None:
        super().__init__()
        self._load_value = load
        self._gone: set = set()

    def _load(self, key) -> None:
        if key in self._gone or dict.__contains__(self, key):
            return
        value = self._load_value(key)
        if value is None:
            self._gone.add(key)
        else:
            dict.__setitem__(self, key, value)

    def get(self, key, default=None):
        self._load(key)
        return dict.get(self, key, default)

    def __contains__(self, key) -> bool:
        self._load(key)
        return dict.__contains__(self, key)

    def __getitem__(self, key):
        self._load(key)
        return dict.__getitem__(self, key)

    def __setitem__(self, key, value) -> None:
        self._gone.discard(key)
        dict.__setitem__(self, key, value)

    def __delitem__(self, key) -> None:
        dict.__delitem__(self, key)
        self._gone.add(key)

    def pop(self, key, *default):
        self._load(key)
        self._gone.add(key)
        return dict.pop(self, key, *default)


def _historic_accounts(store: ChainStore, number: int) -> _Fallback:
    return _Fallback(lambda address: store.account_at(address, number))


def _historic_slots(store: ChainStore, number: int, address: bytes) -> _Fallback:
    return _Fallback(lambda slot: store.storage_at(address, slot, number) or None)


class _HistoricStorage(dict):
    """address -> slots; an account's slots fall back to history one slot at a time."""

    def __init__(self, store: ChainStore, number: int, accounts: _Fallback) -> None:
        super().__init__()
        self._store, self._number, self._accounts = store, number, accounts
        self._wiped: set[bytes] = set()

    def _slots(self, address: bytes):
        if not dict.__contains__(self, address) and address not in self._wiped:
            if address in self._accounts:
                dict.__setitem__(self, address, _historic_slots(self._store, self._number, address))
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
    accounts = _historic_accounts(store, number)
    state._accounts = accounts
    state._storage = _HistoricStorage(store, number, accounts)
    state._code = _Fallback(store.code)
    return state
