"""What the shared SQL runs on: a transaction handle and an executor that schedules it.

An *op* is a plain function of a :class:`Tx`; it may run several statements and is
re-runnable (the PostgreSQL executor reruns the ops of a failed batch one by one to
isolate the failing one). Statements are written once with ``?`` placeholders in the
SQL both backends understand; the few dialect differences are attributes of the Tx.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred

__all__ = ["Dialect", "Executor", "Op", "StatementCount", "StoreError", "StoreInUseError", "StoreMissingError", "Tx"]

T = TypeVar("T")


class StoreError(RuntimeError):
    """The store could not commit: nothing that waited on it may be acted upon."""


class StoreInUseError(RuntimeError):
    """Another smpp-bridge process owns this embedded store."""


class StoreMissingError(StoreError):
    """A tool was pointed at a store that does not exist (it would create an empty one)."""


@dataclass(slots=True)
class StatementCount:
    """SQL statements executed (an executemany of n rows counts n): the store's work per message."""

    n: int = 0


class Dialect(Enum):
    SQLITE = "sqlite"
    POSTGRES = "postgres"


class Tx(Protocol):
    dialect: Dialect
    skip_locked: str            # " FOR UPDATE SKIP LOCKED" where the backend has it, else ""
    for_update: str             # " FOR UPDATE" where the backend has row locks, else ""

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...
    def run(self, sql: str, params: Sequence[Any] = ()) -> int: ...
    def many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...
    def lock_keys(self, namespace: int, keys: Sequence[str]) -> None:
        """Serialise with every other transaction locking any of ``keys`` until this one ends
        (PostgreSQL: transaction advisory locks, in one order; SQLite has one writer)."""


Op = Callable[[Tx], T]


class Executor(Protocol):
    description: str
    shared: bool                # other processes use the same database (PostgreSQL), or not (SQLite)
    commits: int
    commit_seconds: float
    statements: StatementCount

    def read(self, op: Callable[[Tx], T]) -> Deferred[T]: ...
    def write(self, op: Callable[[Tx], T]) -> Deferred[T]: ...
    def durable(self) -> Deferred[None]: ...
    def before_commit(self, fn: Callable[[], object]) -> bool:
        """Call ``fn`` once on the reactor thread, in the transaction the next group commit
        makes durable, just before that commit. False (``fn`` not taken) when no such commit
        is pending (PostgreSQL commits each batch as it runs): the caller schedules it."""
    def flush(self) -> Deferred[None]: ...
    def close(self) -> Deferred[None]: ...
