"""What only the PostgreSQL backend has: transactions rolled back by the server run again."""

from __future__ import annotations

from twisted.internet.defer import Deferred

from bridge.store import result_of
from bridge.store.executor import Tx
from bridge.store.postgres import PostgresExecutor
from tests.pgserver import PgServer


def test_a_batch_rolled_back_by_a_deadlock_runs_again(pg_server: PgServer) -> None:
    """A deadlock with another instance fails nobody: every call of the batch commits once."""
    executor = PostgresExecutor(pg_server.new_database(), inline=True)
    result_of(executor.write(lambda tx: tx.run("CREATE TABLE t (n INTEGER)")))
    attempts: list[int] = []

    def unlucky(tx: Tx) -> str:
        attempts.append(1)
        if len(attempts) < 3:   # PostgreSQL's own deadlock error, twice
            tx.run("DO $$ BEGIN RAISE EXCEPTION 'deadlock' USING ERRCODE = '40P01'; END $$")
        tx.run("INSERT INTO t VALUES (2)")
        return "done"

    batch = executor._run_batch([lambda tx: tx.run("INSERT INTO t VALUES (1)"), unlucky])
    assert [o.ok for o in batch] == [True, True] and batch[1].value == "done"
    assert len(attempts) == 3
    rows: Deferred[list[tuple[int, ...]]] = executor.read(lambda tx: tx.rows("SELECT n FROM t ORDER BY n"))
    assert result_of(rows) == [(1,), (2,)]          # each insert committed exactly once
    result_of(executor.close())
