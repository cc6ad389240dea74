"""What only the PostgreSQL backend has: transactions rolled back by the server run again."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from twisted.internet.defer import Deferred

from bridge.config import StoreConfig
from bridge.finaliser import final_choice
from bridge.models import NewMessage, NewSegment
from bridge.store import open_store, result_of
from bridge.store.executor import Tx
from bridge.store.postgres import PostgresExecutor, _PgTx
from bridge.store.records import ReceiptArrival, ReceiptOutcome
from tests.pgserver import PgServer

T0 = 1_800_000_000.0


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


def test_a_receipt_whose_submit_result_commits_mid_call_is_applied(pg_server: PgServer,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Another member's submit result can commit between two statements of a receipt's call
    (each statement reads its own snapshot): the segment is then found by its id and made
    final, not taken for a duplicate of a final receipt (a message that never got its report)."""
    url = pg_server.new_database()
    store = open_store(StoreConfig(url=url), inline=True)
    result_of(store.messages.insert([NewMessage(
        id="m1", app_id="a", channel="10690001", recipient="+8613812345678", carrier="cmcc", klass="otp",
        text="t", content_hash="h", status_callback="http://r.example/cb", extend="", created_at=T0,
        state="queued", status=None, org_code=None, release_at=None,
        segments=(NewSegment(1, 1, b"x", 8, 0, None, False),), counted=True)]))
    (seg,) = result_of(store.messages.take_queued("cmcc", 1))
    other = psycopg.connect(url)          # the member that sent it: its submit result, uncommitted
    other.execute("UPDATE segments SET state = 'submitted', carrier_msg_id = '77' WHERE id = %s", (seg.id,))
    real_rows = _PgTx.rows

    def rows_then_commit_the_other(self: _PgTx, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        out = real_rows(self, sql, params)
        if sql.startswith("UPDATE segments SET state = 'final'") and not other.closed:
            other.commit()                 # ...which commits right after our UPDATE looked
            other.close()
        return out
    monkeypatch.setattr(_PgTx, "rows", rows_then_commit_the_other)
    arrival = ReceiptArrival("cmcc", "77", True, "DELIVRD", "DELIVRD", T0 + 1, "{}")
    got = result_of(store.messages.apply_receipt(arrival, final_choice, lambda m, c: "{}"))
    assert other.closed, "the interleaving under test did not happen"
    assert (got.outcome, got.segment_id) == (ReceiptOutcome.APPLIED, seg.id)
    assert got.finalised is not None and got.finalised.message.state == "final"
    assert [d.state for d in result_of(store.messages.segment_details("m1"))] == ["final"]
    result_of(store.close())
