"""The embedded backend: SQLite in WAL mode on the reactor thread, with group commit.

Writes go into one open transaction that is committed every ``commit_interval`` (group
commit); whatever must not happen before the data is durable waits on :meth:`durable`.
One fsync then covers hundreds of state changes. Calls run synchronously, so their
Deferreds have fired when they return: the SQLite path costs no thread hops.

In the daemon the COMMIT itself (the fsync: about a millisecond, a sixth of the reactor's
time under load) runs on a worker thread while the reactor goes on with network work;
store calls made meanwhile wait, in order, until it is done.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

import structlog
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure

from bridge.store.executor import Dialect, StatementCount, StoreError, StoreInUseError, Tx
from bridge.store.schema import MIGRATIONS
from bridge.store.sql import SqlStore
from bridge.unimported import unimported

# sqlite-utils imports numpy and pandas when they are installed (a bench or test
# environment has numpy) only to map their column types, which the bridge never stores:
# numpy alone is 13 MB of the daemon's resident memory.
with unimported("numpy", "pandas"):
    from sqlite_utils import Database, Migrations

__all__ = ["SqliteExecutor", "lock_sqlite_store", "open_sqlite"]

log = structlog.get_logger("store")
T = TypeVar("T")

WAL_SIZE_LIMIT = 4 * 1024 * 1024        # bytes the WAL file is truncated to after a checkpoint
AUTOCHECKPOINT_PAGES = 4000             # backstop only: the checkpoint thread normally keeps up

_migrations = Migrations("smpp_bridge")
for _m in MIGRATIONS:
    def _apply(db: Database, _stmts: tuple[str, ...] = _m.statements) -> None:
        for stmt in _stmts:
            db.execute(stmt)
    _migrations(name=_m.name)(_apply)


def lock_sqlite_store(path: Path | str) -> IO[Any] | None:
    """An exclusive lock on the database file itself: one daemon per database.

    The lock is taken on the file's inode (``flock`` on an open descriptor), so a
    symlink, a relative spelling or a hard link of the same database finds it held.
    Operator tools take it too: if they get it, no daemon runs and they push
    themselves. Returns the open file (keep it open to hold the lock) or None.
    """
    if str(path) == ":memory:":
        return open(os.devnull)  # noqa: SIM115 (nothing to lock)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle = open(target, "ab")  # noqa: SIM115 (held for the life of the process; creates it)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


class _SqliteTx:
    dialect = Dialect.SQLITE
    for_update = ""
    skip_locked = ""

    def __init__(self, conn: sqlite3.Connection, count: StatementCount) -> None:
        # One cursor for every statement: ``Connection.execute`` makes (and frees) a cursor
        # per call, 0.4 µs of a statement's 1-3 µs. Each statement is run to its end here
        # (rows fetched, DML stepped), so none is left open to hold the next one up.
        self._cursor = conn.cursor()
        self._count = count

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self._count.n += 1
        return self._cursor.execute(sql, params).fetchall()

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        self._count.n += 1
        return self._cursor.execute(sql, params).rowcount

    def many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = rows if isinstance(rows, list) else list(rows)
        self._count.n += len(rows)
        self._cursor.executemany(sql, rows)

    def lock_keys(self, namespace: int, keys: Sequence[str]) -> None:
        return None   # one process, one writer: every transaction is already serialised


class SqliteExecutor:
    """Runs ops at once on the reactor thread; commits them in groups."""

    shared = False   # one process per database file (the daemon's file lock)

    def __init__(self, path: Path | str, *, clock: Any, commit_interval_s: float = 0.005,
                 synchronous: str = "FULL", commit_thread: bool = False) -> None:
        memory = str(path) == ":memory:"
        if not memory:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.description = str(path)
        # (The connection is handed to the commit thread while the reactor waits for it.)
        self.db = Database(memory=True) if memory else Database(
            sqlite3.connect(str(path), check_same_thread=not commit_thread))
        self.db.execute("PRAGMA busy_timeout = 5000")
        if not memory:
            self.db.enable_wal()
            self.db.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
        self.db.execute(f"PRAGMA synchronous = {synchronous}")
        _migrations.apply(self.db)
        self._conn: sqlite3.Connection = self.db.conn
        self.statements = StatementCount()
        self._tx = _SqliteTx(self._conn, self.statements)
        self._clock = clock
        self._interval = commit_interval_s
        self._waiters: list[Deferred[None]] = []
        self._timer: Any = None
        self._checkpoint_timer: Any = None
        self._checkpoint_conn: sqlite3.Connection | None = None
        self._checkpointing = False
        self._commit_thread = commit_thread and not memory
        self._committing = False                       # a COMMIT is running on the worker thread
        # Calls made during a COMMIT, in order: (run, op, its Deferred), (commit, None, None)
        # or (_before_next_commit, fn, None).
        self._queued: list[tuple[Callable[..., Any], Any, Deferred[Any] | None]] = []
        self._next_waiters: list[Deferred[None]] = []  # durable() asked during a COMMIT
        self._pre_commit: list[Callable[[], object]] = []   # before_commit(): run by the next _commit
        self.commits = 0
        self.commit_seconds = 0.0
        self.closed = False
        self.lock: IO[Any] | None = None   # the one-process lock, when this process is the daemon

    def read(self, op: Callable[[Tx], T]) -> Deferred[T]:
        return self._call(self._read_now, op)

    def write(self, op: Callable[[Tx], T]) -> Deferred[T]:
        if self._committing:   # (what _call does, inlined: a message makes several writes)
            return self._later(self._write_now, op)
        try:
            return succeed(self._write_now(op))
        except StoreError as exc:
            return fail(exc)

    def _call(self, run: Callable[[Callable[[Tx], T]], T], op: Callable[[Tx], T]) -> Deferred[T]:
        """``run(op)`` now, or once the COMMIT in progress is done."""
        if self._committing:
            return self._later(run, op)
        try:
            return succeed(run(op))
        except StoreError as exc:
            return fail(exc)

    def _read_now(self, op: Callable[[Tx], T]) -> T:
        try:
            return op(self._tx)
        except sqlite3.Error as exc:
            raise StoreError(f"read failed: {exc}") from exc

    def _later(self, run: Callable[[Callable[[Tx], T]], T], op: Callable[[Tx], T]) -> Deferred[T]:
        """Run ``run(op)`` once the COMMIT in progress is done; the Deferred fires with it then."""
        d: Deferred[T] = Deferred()
        self._queued.append((run, op, d))
        return d

    def _write_now(self, op: Callable[[Tx], T]) -> T:
        try:
            if not self._conn.in_transaction:
                self._conn.execute("BEGIN IMMEDIATE")
            return op(self._tx)
        except sqlite3.Error as exc:
            raise StoreError(f"write failed: {exc}") from exc
        finally:
            # A write nobody waits on is committed by the group-commit timer all the
            # same: an open transaction must never keep the database's write lock.
            if self._conn.in_transaction:
                self._arm()

    def _arm(self) -> None:
        if self._timer is None or not self._timer.active():
            self._timer = self._clock.callLater(self._interval, self._commit_quietly)

    def _commit_quietly(self) -> None:
        with contextlib.suppress(StoreError):   # logged by _commit; the waiters got the failure
            self._commit()

    def durable(self) -> Deferred[None]:
        """A Deferred that fires once everything written so far is committed."""
        d: Deferred[None] = Deferred()
        if self._committing:
            # Whatever was written before is in the COMMIT running now; calls queued behind
            # it may write more, so this waits for the commit after it (if there is one).
            self._next_waiters.append(d)
            return d
        if not self._conn.in_transaction:
            d.callback(None)
            return d
        self._waiters.append(d)
        self._arm()
        return d

    def before_commit(self, fn: Callable[[], object]) -> bool:
        """Call ``fn`` just before the next COMMIT, in its transaction (False: none is open).

        The dispatcher takes queued segments here: one statement takes what a whole group
        commit queued, instead of one per turn of the reactor, and the submit waits for the
        same fsync it waited for before.
        """
        if self._committing:
            # Calls queued behind the COMMIT in progress usually open the next transaction:
            # decided in their order, once it is done.
            self._queued.append((self._before_next_commit, fn, None))
            return True
        if not self._conn.in_transaction:
            return False
        self._pre_commit.append(fn)   # the write that opened the transaction armed the timer
        return True

    def _before_next_commit(self, fn: Callable[[], object]) -> None:
        if not self.before_commit(fn):
            fn()

    def _run_pre_commit(self) -> None:
        hooks, self._pre_commit = self._pre_commit, []
        for fn in hooks:
            try:
                fn()
            except Exception:   # a caller's bug must not cost the commit everyone waits on
                log.exception("store.before_commit_failed")

    def flush(self) -> Deferred[None]:
        """Commit now; fails with StoreError if the commit does."""
        if self._committing:
            d = self.durable()
            self._queued.append((self._commit_quietly, None, None))
            return d
        if self._commit_thread and self._conn.in_transaction:
            d = self.durable()
            self._commit_quietly()
            return d
        try:
            self._commit()
        except StoreError as exc:
            return fail(exc)
        return succeed(None)

    def _commit(self) -> None:
        if self._committing:
            return   # (a timer armed by a queued call; the commit in progress re-arms it)
        if self._pre_commit:
            self._run_pre_commit()   # (before the timer is cancelled: their writes re-arm it)
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        waiters, self._waiters = self._waiters, []
        if not self._conn.in_transaction:
            for d in waiters:
                d.callback(None)
            return
        if self._commit_thread:
            self._committing = True
            t0 = time.perf_counter()
            done = deferToThreadPool(self._clock, self._clock.getThreadPool(), self._conn.execute, "COMMIT")
            done.addBoth(self._committed, waiters, t0)
            return
        t0 = time.perf_counter()
        try:
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._commit_failed(exc, waiters)
            raise StoreError(f"commit failed: {exc}") from exc
        self._commit_done(waiters, t0)

    def _commit_done(self, waiters: list[Deferred[None]], t0: float) -> None:
        self.commit_seconds += time.perf_counter() - t0
        self.commits += 1
        for d in waiters:
            d.callback(None)

    def _commit_failed(self, exc: BaseException, waiters: list[Deferred[None]]) -> None:
        log.critical("store.commit_failed", error=str(exc))
        with contextlib.suppress(sqlite3.Error):
            self._conn.rollback()
        for d in waiters:
            d.errback(StoreError(f"commit failed: {exc}"))

    def _committed(self, result: object, waiters: list[Deferred[None]], t0: float) -> None:
        """Back on the reactor thread after a threaded COMMIT: answer, then run what waited."""
        self._committing = False
        if isinstance(result, Failure):
            self._commit_failed(result.value, waiters)
        else:
            self._commit_done(waiters, t0)
        queued, self._queued = self._queued, []
        for entry in queued:
            if self._committing:
                self._queued.append(entry)   # a queued flush began the next COMMIT: wait for it
                continue
            run, op, d = entry
            if d is None:
                run() if op is None else run(op)
                continue
            try:
                value = run(op)
            except StoreError as exc:
                d.errback(exc)
            else:
                d.callback(value)
        if not self._committing:
            nxt, self._next_waiters = self._next_waiters, []
            for d in nxt:
                if self._conn.in_transaction:
                    self._waiters.append(d)
                    self._arm()
                else:
                    d.callback(None)

    # -- WAL checkpoints -----------------------------------------------------------

    def start_background_checkpoints(self, interval_s: float = 1.0) -> None:
        """Checkpoint the WAL from a worker thread on its own connection.

        SQLite's automatic checkpoint runs inside whichever COMMIT crosses the WAL size
        limit and fsyncs the database file there, which stalled the reactor for tens of
        milliseconds (the p99 of intake->submit_sm). A PASSIVE checkpoint on another
        connection never blocks the writer; with ``journal_size_limit`` the WAL file is
        cut back once a checkpoint has caught up, so it cannot grow without bound. The
        automatic checkpoint stays on at a high page count as a backstop.
        """
        if str(self.path) == ":memory:":
            return
        self.db.execute(f"PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_PAGES}")

        def tick() -> None:
            if self.closed:
                return
            if not self._checkpointing:
                self._checkpointing = True
                d = deferToThreadPool(self._clock, self._clock.getThreadPool(), self.checkpoint)
                d.addErrback(lambda f: log.warning("store.checkpoint_failed", error=str(f.value)))
                d.addBoth(lambda _: setattr(self, "_checkpointing", False))
            self._checkpoint_timer = self._clock.callLater(interval_s, tick)

        self._checkpoint_timer = self._clock.callLater(interval_s, tick)

    def checkpoint(self) -> None:
        """One PASSIVE checkpoint on the checkpoint connection (any thread, one at a time)."""
        if self._checkpoint_conn is None:
            self._checkpoint_conn = sqlite3.connect(str(self.path), check_same_thread=False, timeout=5)
            self._checkpoint_conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
        self._checkpoint_conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def close(self) -> Deferred[None]:
        if self.closed:
            return succeed(None)
        if self._checkpoint_timer is not None and self._checkpoint_timer.active():
            self._checkpoint_timer.cancel()

        def shut(result: object) -> object:
            self.closed = True
            self.db.close()
            if self._checkpoint_conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._checkpoint_conn.close()
            if self.lock is not None:
                self.lock.close()
            return result
        return self.flush().addBoth(shut)


def open_sqlite(path: Path | str, *, clock: Any, commit_interval_s: float = 0.005,
                synchronous: str = "FULL", commit_thread: bool = False,
                exclusive: bool = False, node: str = "",
                failover_s: float = 10.0) -> tuple[SqlStore, SqliteExecutor]:
    """``exclusive``: hold the one-process lock for the store's life (StoreInUseError if held)."""
    lock = None
    if exclusive:
        lock = lock_sqlite_store(path)
        if lock is None:
            raise StoreInUseError(f"store {path} is in use by another smpp-bridge process")
    try:
        executor = SqliteExecutor(path, clock=clock, commit_interval_s=commit_interval_s,
                                  synchronous=synchronous, commit_thread=commit_thread)
    except BaseException:
        if lock is not None:
            lock.close()
        raise
    executor.lock = lock
    return SqlStore(executor, node, failover_s), executor
