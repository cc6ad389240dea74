"""The durable store: one interface split by concern, two backends behind it.

``open_store(config.store, ...)`` is the only place that knows which backend runs:
SQLite (``[store] path``, the embedded default, one process) or PostgreSQL
(``[store] url``, one database for any number of instances). Everything else talks to
the :class:`~bridge.store.interface.Store` Protocol.
"""

from __future__ import annotations

from typing import IO, Any

from twisted.internet.defer import Deferred

from bridge.config import StoreConfig
from bridge.store.executor import StoreError, StoreInUseError, StoreMissingError
from bridge.store.interface import (
    BlacklistStore,
    MessageStore,
    MoStore,
    OutboxStore,
    ReceiptStore,
    Store,
)

__all__ = [
    "BlacklistStore",
    "MessageStore",
    "MoStore",
    "OutboxStore",
    "ReceiptStore",
    "Store",
    "StoreError",
    "StoreInUseError",
    "StoreMissingError",
    "lock_store",
    "open_store",
    "result_of",
]


def lock_store(config: StoreConfig) -> IO[Any] | Any | None:
    """A lock that says no daemon runs on this store; None if one does. Keep it open.

    SQLite: the one-process lock on the database file. PostgreSQL, shared by a cluster:
    an exclusive advisory lock that every running daemon blocks by holding it shared.
    """
    if config.url:
        from bridge.store.postgres import lock_postgres_store

        return lock_postgres_store(config.url)
    from bridge.store.sqlite import lock_sqlite_store

    return lock_sqlite_store(config.path)


def open_store(config: StoreConfig, *, reactor: Any = None, inline: bool = False,
               synchronous: str = "FULL", daemon: bool = False, create: bool = True,
               node: str = "", failover_s: float = 10.0) -> Store:
    """Open (creating or migrating) the configured store.

    With ``inline`` (command-line tools, deterministic tests) every call has finished
    when it returns; otherwise PostgreSQL work runs on a database thread of ``reactor``.
    ``daemon``: this process is a daemon on the store, so tools see it running (SQLite:
    the one-process lock, StoreInUseError if another daemon holds it; PostgreSQL: the
    lock every daemon of a cluster holds shared). Without ``create`` a missing embedded
    store raises StoreMissingError instead of being created empty. ``node`` is the
    cluster member the store works for: what it claims is marked so, and what a member
    silent for ``failover_s`` claimed is taken over.
    """
    if config.url:
        from bridge.store.postgres import open_postgres

        store, _ = open_postgres(config.url, reactor=reactor, inline=inline, daemon=daemon, node=node,
                                 failover_s=failover_s)
        return store
    from bridge.store.sqlite import open_sqlite

    if not create and str(config.path) != ":memory:" and not config.path.exists():
        raise StoreMissingError(f"{config.path}: no such store")
    clock = reactor if reactor is not None else _NoClock()
    threads = reactor is not None and not inline   # a real reactor: commits and checkpoints off-thread
    store, executor = open_sqlite(config.path, clock=clock, synchronous=synchronous, commit_thread=threads,
                                  commit_interval_s=0 if inline else config.commit_interval_ms / 1000,
                                  exclusive=daemon, node=node, failover_s=failover_s)
    if threads:
        executor.start_background_checkpoints()
    return store


def result_of(d: Deferred[Any]) -> Any:
    """The result of a Deferred that has already fired (inline stores); raises its failure."""
    box: list[Any] = []
    d.addBoth(box.append)
    if not box:
        raise RuntimeError("store call has not finished: open the store inline for synchronous use")
    result = box[0]
    from twisted.python.failure import Failure

    if isinstance(result, Failure):
        result.raiseException()
    return result


class _NoClock:
    """For an inline SQLite store: commits happen at flush(), never on a timer."""

    def callLater(self, delay: float, fn: Any, *args: Any) -> Any:  # noqa: N802 (IReactorTime)
        fn(*args)
        return _Fired()


class _Fired:
    def active(self) -> bool:
        return False

    def cancel(self) -> None:
        return None
