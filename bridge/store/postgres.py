"""The PostgreSQL backend: psycopg 3 on one database thread, batched transactions.

Why a worker thread with batches rather than psycopg's async pipeline mode: the ops are
small synchronous functions shared with SQLite, several of them read what they just
wrote (``UPDATE ... RETURNING`` then a dependent statement), and the reactor must never
wait on the network. So calls are queued on the reactor thread; whenever the database
thread is free it takes *everything* queued so far and runs it as one transaction, then
fires each call's Deferred on the reactor. That is group commit again: the batch is
whatever arrived while the previous commit was in flight, one fsync for all of it. If a
batch fails, its ops are rerun one per transaction, so one bad op fails alone.

``inline=True`` runs each op at once on the calling thread in its own transaction: for
command-line tools and deterministic tests, which have no reactor running.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
import structlog
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from bridge.store.executor import Dialect, StatementCount, StoreError, Tx
from bridge.store.schema import MIGRATIONS, postgres_ddl
from bridge.store.sql import SqlStore

__all__ = ["PostgresExecutor", "lock_postgres_store", "migrate_postgres", "open_postgres", "redact_url"]

log = structlog.get_logger("store")
T = TypeVar("T")

MIGRATION_LOCK = 0x534D5050          # pg_advisory_lock key: "SMPP"
DAEMON_LOCK = 0x534D5044             # held shared by every running daemon; a tool's exclusive try
                                     # tells whether any daemon (which then pushes) is alive
MAX_BATCH = 2000                     # ops per transaction


def redact_url(url: str) -> str:
    """The URL without its password, for logs and the ready line."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


_SQL_CACHE: dict[str, str] = {}


def _pg(sql: str) -> str:
    out = _SQL_CACHE.get(sql)
    if out is None:
        out = _SQL_CACHE[sql] = sql.replace("%", "%%").replace("?", "%s")
    return out


class _PgTx:
    dialect = Dialect.POSTGRES
    for_update = " FOR UPDATE"
    skip_locked = " FOR UPDATE SKIP LOCKED"

    def __init__(self, conn: psycopg.Connection[Any], count: StatementCount) -> None:
        self._cur = conn.cursor()
        self._count = count

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self._count.n += 1
        self._cur.execute(_pg(sql), params)
        return self._cur.fetchall() if self._cur.description is not None else []

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        self._count.n += 1
        self._cur.execute(_pg(sql), params)
        return self._cur.rowcount

    def many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        if rows:
            self._count.n += len(rows)
            self._cur.executemany(_pg(sql), rows)

    def lock_keys(self, namespace: int, keys: Sequence[str]) -> None:
        """Advisory locks held to commit; taken in sorted order so two takers cannot deadlock."""
        ids = sorted({_key_id(k) for k in keys})
        if ids:
            self._count.n += 1
            self._cur.execute("SELECT pg_advisory_xact_lock(%s::int, k) FROM unnest(%s::int[]) AS k",
                              (namespace, ids))


def _key_id(key: str) -> int:
    """A stable signed 32-bit id for a lock key (Python's hash() changes per process)."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=4).digest(), "big", signed=True)


@dataclass(frozen=True, slots=True)
class _Outcome:
    ok: bool
    value: Any


def migrate_postgres(conn: psycopg.Connection[Any]) -> list[str]:
    """Apply pending migrations under an advisory lock; safe when several start at once."""
    applied: list[str] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS smpp_bridge_migrations"
                     " (name TEXT PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)")
        done = {r[0] for r in conn.execute("SELECT name FROM smpp_bridge_migrations").fetchall()}
        for migration in MIGRATIONS:
            if migration.name in done:
                continue
            for stmt in migration.statements:
                conn.execute(postgres_ddl(stmt))
            conn.execute("INSERT INTO smpp_bridge_migrations (name, applied_at) VALUES (%s, %s)",
                         (migration.name, time.time()))
            applied.append(migration.name)
    return applied


class PostgresExecutor:
    """Queues ops on the reactor thread and runs them in batches on one database thread."""

    shared = True    # any number of instances: a cluster

    def __init__(self, url: str, *, reactor: Any = None, inline: bool = False,
                 connect_timeout_s: float = 10.0, daemon: bool = False,
                 thread_name: str = "smpp-bridge-db") -> None:
        self._url = url
        self._daemon = daemon
        self.description = redact_url(url)
        self._reactor = reactor
        self._inline = inline or reactor is None
        self._timeout = connect_timeout_s
        self._conn: psycopg.Connection[Any] | None = None
        self._pending: list[tuple[Callable[[Tx], Any], Deferred[Any]]] = []
        self._running = False
        self._closed = False
        self._pool: ThreadPool | None = None
        self.commits = 0
        self.commit_seconds = 0.0
        self.statements = StatementCount()
        # Connect and migrate now, on the caller's thread, before anything depends on it.
        conn = self._connection()
        applied = migrate_postgres(conn)
        if applied:
            log.info("store.migrated", backend="postgresql", migrations=applied)
        if not self._inline:
            self._pool = ThreadPool(minthreads=1, maxthreads=1, name=thread_name)
            self._pool.start()

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            try:
                self._conn = psycopg.connect(self._url, autocommit=True, connect_timeout=int(self._timeout))
                if self._daemon:   # tools see a running daemon through this shared lock
                    self._conn.execute("SELECT pg_try_advisory_lock_shared(%s)", (DAEMON_LOCK,))
            except psycopg.Error as exc:
                raise StoreError(f"cannot connect to {self.description}: {exc}") from None
        return self._conn

    # -- calls -----------------------------------------------------------------------

    def read(self, op: Callable[[Tx], T]) -> Deferred[T]:
        return self._submit(op)

    def write(self, op: Callable[[Tx], T]) -> Deferred[T]:
        return self._submit(op)

    def durable(self) -> Deferred[None]:
        """Fires once every op queued so far is committed."""
        if not self._pending and not self._running:
            return succeed(None)
        return self._submit(_nothing)

    def before_commit(self, fn: Callable[[], object]) -> bool:
        return False   # each batch commits as it runs: there is no pending commit to join

    def flush(self) -> Deferred[None]:
        return self.durable()

    def _submit(self, op: Callable[[Tx], T]) -> Deferred[T]:
        if self._closed:
            return fail(StoreError("store is closed"))
        if self._inline:
            out = self._run_batch([op])[0]
            return succeed(out.value) if out.ok else fail(out.value)
        d: Deferred[T] = Deferred()
        self._pending.append((op, d))
        self._start_batch()
        return d

    def _start_batch(self) -> None:
        if self._running or not self._pending or self._pool is None:
            return
        batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
        self._running = True
        ops = [op for op, _ in batch]
        d = deferToThreadPool(self._reactor, self._pool, self._run_batch, ops)
        d.addBoth(self._batch_done, batch)

    def _batch_done(self, outcomes: Any, batch: list[tuple[Callable[[Tx], Any], Deferred[Any]]]) -> None:
        self._running = False
        if isinstance(outcomes, Failure):   # the thread itself failed: fail the whole batch
            outcomes = [_Outcome(False, StoreError(str(outcomes.value)))] * len(batch)
        for (_, d), out in zip(batch, outcomes, strict=True):
            if out.ok:
                d.callback(out.value)
            else:
                d.errback(out.value)
        self._start_batch()

    # -- database thread ---------------------------------------------------------------

    def _run_batch(self, ops: list[Callable[[Tx], Any]]) -> list[_Outcome]:
        t0 = time.perf_counter()
        try:
            conn = self._connection()
        except StoreError as exc:
            return [_Outcome(False, exc)] * len(ops)
        try:
            for attempt in range(_ROLLBACK_RETRIES):
                try:
                    with conn.transaction():
                        tx = _PgTx(conn, self.statements)
                        values = [op(tx) for op in ops]
                    break
                except _ROLLED_BACK as exc:
                    # A deadlock or serialization failure with another instance's
                    # transaction: PostgreSQL rolled ours back, so the whole batch runs again.
                    _backoff(attempt, exc)
            else:
                return [self._run_alone(conn, op) for op in ops]
            self.commits += 1
            self.commit_seconds += time.perf_counter() - t0
            return [_Outcome(True, v) for v in values]
        except psycopg.OperationalError as exc:
            log.error("store.connection_lost", backend="postgresql", error=str(exc))
            self._drop_connection()
            return [_Outcome(False, StoreError(f"database unavailable: {exc}"))] * len(ops)
        except Exception:   # one op failed: rerun them one per transaction to isolate it
            if len(ops) == 1:
                return [self._run_alone(conn, ops[0])]
            return [self._run_alone(conn, op) for op in ops]

    def _run_alone(self, conn: psycopg.Connection[Any], op: Callable[[Tx], Any]) -> _Outcome:
        try:
            for attempt in range(_ROLLBACK_RETRIES):
                try:
                    with conn.transaction():
                        value = op(_PgTx(conn, self.statements))
                    break
                except _ROLLED_BACK as exc:
                    if attempt == _ROLLBACK_RETRIES - 1:
                        raise
                    _backoff(attempt, exc)
            self.commits += 1
            return _Outcome(True, value)
        except _ROLLED_BACK as exc:
            return _Outcome(False, StoreError(f"rolled back {_ROLLBACK_RETRIES} times: {exc}"))
        except psycopg.OperationalError as exc:
            self._drop_connection()
            return _Outcome(False, StoreError(f"database unavailable: {exc}"))
        except psycopg.Error as exc:
            return _Outcome(False, StoreError(f"statement failed: {exc}"))
        except Exception as exc:  # a bug in an op: fail that call, keep the thread alive
            return _Outcome(False, exc)

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def close(self) -> Deferred[None]:
        if self._closed:
            return succeed(None)
        d = self.durable()

        def shut(result: Any) -> Any:
            self._closed = True
            if self._pool is not None:
                self._pool.stop()
            self._drop_connection()
            return result
        return d.addBoth(shut)


def lock_postgres_store(url: str) -> psycopg.Connection[Any] | None:
    """The open connection holding DAEMON_LOCK exclusively, or None while any daemon runs."""
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        raise StoreError(f"cannot connect to {redact_url(url)}: {exc}") from None
    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (DAEMON_LOCK,)).fetchone()
    if row is not None and row[0]:
        return conn
    conn.close()
    return None


_ROLLBACK_RETRIES = 8
# SQLSTATE class 40: the server rolled the transaction back (deadlock, serialization failure).
_ROLLED_BACK = (psycopg.errors.TransactionRollback, psycopg.errors.DeadlockDetected,
                psycopg.errors.SerializationFailure)


def _backoff(attempt: int, exc: Exception) -> None:
    """On the database thread: a short, jittered pause before running a rolled-back batch again."""
    log.info("store.rolled_back", backend="postgresql", attempt=attempt + 1, error=str(exc).splitlines()[0])
    time.sleep(random.uniform(0.0005, 0.002) * 2 ** min(attempt, 5))


def _nothing(tx: Tx) -> None:
    return None


def open_postgres(url: str, *, reactor: Any = None, inline: bool = False,
                  daemon: bool = False, node: str = "",
                  failover_s: float = 10.0) -> tuple[SqlStore, PostgresExecutor]:
    """A cluster member (``node``) gets a second connection and thread for membership:
    its heartbeats never wait behind a batch of pipeline work, and never share a
    transaction (and so a lock-order deadlock) with it."""
    executor = PostgresExecutor(url, reactor=reactor, inline=inline, daemon=daemon)
    cluster = PostgresExecutor(url, reactor=reactor, inline=inline, thread_name="smpp-bridge-cluster") \
        if node else None
    return SqlStore(executor, node, failover_s, cluster_executor=cluster), executor
