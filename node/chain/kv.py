"""Key-value backends: LevelDB (plyvel, the embedded default) and an ordered in-memory map.

Both offer the same small surface — get, write batches, ordered range iteration — so the
chain store above them never knows which it has. The memory backend is for
`--ephemeral`; tests of persistence use LevelDB itself.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from sortedcontainers import SortedDict


class KV:
    def get(self, key: bytes) -> bytes | None: ...
    def write(self, puts: list[tuple[bytes, bytes]], deletes: list[bytes] = ()) -> None: ...
    def items(self, start: bytes, stop: bytes, reverse: bool = False) -> Iterator[tuple[bytes, bytes]]: ...
    def close(self) -> None: ...


class LevelKV(KV):
    def __init__(self, path: str | Path, fsync: bool = False) -> None:
        import plyvel

        Path(path).mkdir(parents=True, exist_ok=True)
        self._db = plyvel.DB(str(path), create_if_missing=True, write_buffer_size=64 * 1024 * 1024,
                             lru_cache_size=64 * 1024 * 1024, max_open_files=512)
        self._sync = fsync

    def get(self, key: bytes) -> bytes | None:
        return self._db.get(key)

    def write(self, puts, deletes=()) -> None:
        # One atomic batch: a process kill leaves all of it or none (LevelDB's log).
        with self._db.write_batch(sync=self._sync) as batch:
            for key in deletes:
                batch.delete(key)
            for key, value in puts:
                batch.put(key, value)

    def items(self, start: bytes, stop: bytes, reverse: bool = False):
        return self._db.iterator(start=start, stop=stop, reverse=reverse)

    def close(self) -> None:
        self._db.close()


class MemoryKV(KV):
    def __init__(self) -> None:
        self._data: SortedDict = SortedDict()

    def get(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    def write(self, puts, deletes=()) -> None:
        data = self._data
        for key in deletes:
            data.pop(key, None)
        for key, value in puts:
            data[key] = value

    def items(self, start: bytes, stop: bytes, reverse: bool = False):
        data = self._data
        keys = list(data.irange(start, stop, inclusive=(True, False), reverse=reverse))
        return ((key, data[key]) for key in keys)

    def close(self) -> None:
        pass
