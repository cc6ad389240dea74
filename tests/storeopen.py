"""Opening the store under test in deterministic (Clock) tests, on either backend."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.task import Clock

from bridge.store import Store, open_store, result_of
from bridge.store.sqlite import open_sqlite
from tests.conftest import Backend

__all__ = ["Opener"]


class Opener:
    """Opens the backend under test (again, for a restart) and closes what is left open.

    SQLite runs on the test's Clock with the given group-commit interval; PostgreSQL is
    opened inline, so every call has committed when it returns.
    """

    def __init__(self, backend: Backend, clock: Clock, path: Path, commit_interval_s: float = 0.005) -> None:
        self.backend = backend
        self._clock = clock
        self._path = path
        self._interval = commit_interval_s
        self._open: list[Store] = []

    def open(self, *, memory: bool = False) -> Store:
        if self.backend.name == "sqlite":
            store: Store = open_sqlite(":memory:" if memory else self._path, clock=self._clock,
                                       commit_interval_s=self._interval)[0]
        else:
            store = open_store(self.backend.config, inline=True)
        self._open.append(store)
        return store

    def close(self, store: Store) -> None:
        self._open.remove(store)
        result_of(store.close())

    def crash(self, store: Store) -> None:
        """The process dies: whatever is not committed is lost, nothing is flushed."""
        self._open.remove(store)
        if self.backend.name == "sqlite":
            store._ex._conn.close()  # type: ignore[attr-defined]
        else:
            store._ex._drop_connection()  # type: ignore[attr-defined]  (inline: all committed)

    def close_all(self) -> None:
        for store in self._open:
            result_of(store.close())
        self._open.clear()
