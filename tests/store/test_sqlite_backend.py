"""What only the embedded backend has: the one-process lock, a bounded WAL, the commit thread."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from bridge.models import NewMessage, NewSegment
from bridge.store import result_of
from bridge.store.records import SubmitAccepted
from bridge.store.sqlite import WAL_SIZE_LIMIT, lock_sqlite_store, open_sqlite

T0 = 1_800_000_000.0


def _message(mid: str) -> NewMessage:
    return NewMessage(id=mid, app_id="a", channel="1069", recipient="+8613800000000", carrier="cmcc",
                      klass="otp", text="t", content_hash="h", status_callback="", extend="", created_at=T0,
                      state="queued", status=None, org_code=None, release_at=None,
                      segments=(NewSegment(1, 1, b"t", 0, 0, None, False),), counted=True)


class TestLock:
    def test_one_holder_per_database_file(self, tmp_path: Path) -> None:
        """The lock is exclusive and released with its holder."""
        held = lock_sqlite_store(tmp_path / "s.db")
        assert held is not None and lock_sqlite_store(tmp_path / "s.db") is None
        held.close()
        assert lock_sqlite_store(tmp_path / "s.db") is not None

    def test_other_spellings_of_the_same_database_are_refused(self, tmp_path: Path) -> None:
        """A symlink, a relative path with .. and a hard link all name the locked file."""
        (tmp_path / "var").mkdir()
        real = tmp_path / "var" / "bridge.db"
        held = lock_sqlite_store(real)
        assert held is not None
        (tmp_path / "link.db").symlink_to(real)
        os.link(real, tmp_path / "hard.db")
        for spelling in (tmp_path / "link.db", tmp_path / "var" / ".." / "var" / "bridge.db", tmp_path / "hard.db"):
            assert lock_sqlite_store(spelling) is None, spelling
        held.close()


class TestWal:
    def test_wal_is_cut_back_after_a_checkpoint(self, tmp_path: Path) -> None:
        """However large the WAL grew while checkpoints lagged, it shrinks to the limit once one runs."""
        path = tmp_path / "s.db"
        store, executor = open_sqlite(path, clock=Clock(), commit_interval_s=0)
        executor.db.execute("PRAGMA wal_autocheckpoint = 0")   # as if the checkpoint thread were stalled
        body = os.urandom(140)
        for batch in range(40):
            result_of(store.messages.insert([
                NewMessage(id=f"m{batch}-{i}", app_id="a", channel="1069", recipient="+8613800000000",
                           carrier="cmcc", klass="otp", text="t" * 300, content_hash="h", status_callback="",
                           extend="", created_at=1.0, state="queued", status=None, org_code=None,
                           release_at=None, segments=(NewSegment(1, 1, body, 8, 0, None, False),), counted=True)
                for i in range(200)]))
            result_of(store.flush())
        wal = Path(f"{path}-wal")
        assert wal.stat().st_size > 2 * WAL_SIZE_LIMIT
        executor.checkpoint()
        result_of(store.blacklist.add("1069", "+8613800000009", 2.0, None))   # the next write resets the WAL
        result_of(store.flush())
        assert wal.stat().st_size <= WAL_SIZE_LIMIT
        result_of(store.close())


class ManualPool:
    """A thread pool that runs its work only when the test says so (in the test's thread)."""

    def __init__(self) -> None:
        self.work: list[tuple[Callable[[bool, object], None], Callable[..., object], tuple[object, ...]]] = []

    def callInThreadWithCallback(self, on_result: Callable[[bool, object], None],  # noqa: N802 (Twisted API)
                                 fn: Callable[..., object], *args: object) -> None:
        self.work.append((on_result, fn, args))

    def run(self) -> None:
        work, self.work = self.work, []
        for on_result, fn, args in work:
            try:
                result = fn(*args)
            except Exception:  # noqa: BLE001 (handed back like the real pool does)
                on_result(False, Failure())
            else:
                on_result(True, result)


class ThreadedClock(Clock):
    """A Clock with the two reactor methods a threaded commit uses."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = ManualPool()

    def getThreadPool(self) -> ManualPool:  # noqa: N802 (IReactorThreads)
        return self.pool

    def callFromThread(self, fn: Callable[..., object], *args: object) -> None:  # noqa: N802
        fn(*args)


def _fired(d: Deferred[object]) -> list[object]:
    box: list[object] = []
    d.addBoth(box.append)
    return box


def _commit_in_progress(tmp_path: Path) -> tuple[ThreadedClock, Any, Any]:
    """A store with its COMMIT on a worker thread, one write made and its COMMIT running on the pool."""
    clock = ThreadedClock()
    store, executor = open_sqlite(tmp_path / "s.db", clock=clock, commit_interval_s=0.005, commit_thread=True)
    result_of(store.blacklist.add("1069", "+8613800000001", 1.0, None))
    clock.advance(0.005)
    return clock, store, executor


class TestCommitThread:
    """The daemon's COMMIT runs on a worker thread; store calls made meanwhile wait, in order."""

    def open(self, tmp_path: Path) -> tuple[ThreadedClock, Any]:
        clock = ThreadedClock()
        store, _ = open_sqlite(tmp_path / "s.db", clock=clock, commit_interval_s=0.005, commit_thread=True)
        return clock, store

    def test_calls_during_a_commit_wait_for_it_and_keep_their_order(self, tmp_path: Path) -> None:
        clock, store = self.open(tmp_path)
        result_of(store.blacklist.add("1069", "+8613800000001", 1.0, None))
        first = _fired(store.durable())
        clock.advance(0.005)                              # the group commit starts on the pool
        assert len(clock.pool.work) == 1 and first == []
        order: list[str] = []
        added = store.blacklist.add("1069", "+8613800000002", 2.0, None)
        added.addCallback(lambda _: order.append("write"))
        listed = store.blacklist.listed("1069", ["+8613800000001", "+8613800000002"])
        listed.addCallback(lambda got: order.append(f"read {sorted(got)}"))
        second = _fired(store.durable())                  # asked while the COMMIT runs
        assert order == [] and second == []
        clock.pool.run()                                  # COMMIT done: waiters, then the queue
        assert first == [None]
        assert order == ["write", "read ['+8613800000001', '+8613800000002']"]
        assert second == []                               # the queued write needs the next commit
        clock.advance(0.005)
        clock.pool.run()
        assert second == [None]
        result_of(store.close())

    def test_a_flush_queued_during_a_commit_holds_back_the_calls_after_it(self, tmp_path: Path) -> None:
        clock, store, executor = _commit_in_progress(tmp_path)
        order: list[str] = []
        store.blacklist.add("1069", "+8613800000002", 2.0, None).addCallback(lambda _: order.append("a"))
        flushed = _fired(executor.flush())
        store.blacklist.add("1069", "+8613800000003", 3.0, None).addCallback(lambda _: order.append("b"))
        clock.pool.run()                                  # COMMIT 1 done: "a" runs, the flush starts COMMIT 2
        assert order == ["a"] and flushed == [] and len(clock.pool.work) == 1
        clock.pool.run()                                  # COMMIT 2 done: then "b", which writes again
        assert order == ["a", "b"] and flushed == []      # so the flush answers with the commit after it
        clock.advance(0.005)
        clock.pool.run()
        assert flushed == [None]
        result_of(store.close())
        reopened, _ = open_sqlite(tmp_path / "s.db", clock=Clock(), commit_interval_s=0)
        assert len(result_of(reopened.blacklist.listed("1069", ["+8613800000002", "+8613800000003"]))) == 2
        result_of(reopened.close())

    def test_durable_during_a_commit_with_nothing_after_it_fires_with_that_commit(self, tmp_path: Path) -> None:
        clock, store = self.open(tmp_path)
        result_of(store.blacklist.add("1069", "+8613800000001", 1.0, None))
        clock.advance(0.005)
        waiting = _fired(store.durable())
        clock.pool.run()
        assert waiting == [None] and clock.pool.work == []

    def test_close_waits_for_the_commit_in_progress(self, tmp_path: Path) -> None:
        clock, store = self.open(tmp_path)
        result_of(store.blacklist.add("1069", "+8613800000001", 1.0, None))
        closed = _fired(store.close())
        assert closed == []
        clock.pool.run()
        assert closed == [None]
        reopened, _ = open_sqlite(tmp_path / "s.db", clock=Clock(), commit_interval_s=0)
        assert result_of(reopened.blacklist.listed("1069", ["+8613800000001"])) == {"+8613800000001"}
        result_of(reopened.close())


class TestBeforeCommit:
    """``before_commit``: the dispatcher's feed runs once per group commit, in its transaction."""

    def test_runs_once_in_the_transaction_the_next_commit_makes_durable(self, tmp_path: Path) -> None:
        clock = Clock()
        store, executor = open_sqlite(tmp_path / "s.db", clock=clock, commit_interval_s=0.005)
        assert store.before_commit(lambda: None) is False          # no transaction: not taken
        result_of(store.blacklist.add("1069", "+8613800000001", 1.0, None))
        ran: list[Deferred[None]] = []

        def hook() -> None:   # writes, and waits for durability, inside the commit's transaction
            store.blacklist.add("1069", "+8613800000002", 2.0, None)
            ran.append(store.durable())
        assert store.before_commit(hook) is True
        assert ran == []
        clock.advance(0.005)                                        # the group commit
        assert len(ran) == 1 and _fired(ran[0]) == [None]           # durable with that same commit
        assert not executor.db.conn.in_transaction                  # nothing left for another one
        clock.advance(1.0)
        assert len(ran) == 1                                        # once
        assert result_of(store.blacklist.listed("1069", ["+8613800000002"])) == {"+8613800000002"}
        result_of(store.close())

    def test_a_failing_hook_does_not_fail_the_commit(self, tmp_path: Path) -> None:
        clock = Clock()
        store, _ = open_sqlite(tmp_path / "s.db", clock=clock, commit_interval_s=0.005)
        result_of(store.blacklist.add("1069", "+8613800000001", 1.0, None))
        waiting = _fired(store.durable())
        store.before_commit(lambda: 1 / 0)
        clock.advance(0.005)
        assert waiting == [None]
        result_of(store.close())

    def test_asked_during_a_threaded_commit_it_joins_the_next_one(self, tmp_path: Path) -> None:
        """In call order: after a write queued behind the COMMIT, it waits for the commit after."""
        clock, store, executor = _commit_in_progress(tmp_path)
        order: list[str] = []
        store.blacklist.add("1069", "+8613800000002", 2.0, None).addCallback(lambda _: order.append("write"))
        assert store.before_commit(lambda: order.append("hook")) is True
        clock.pool.run()                                            # COMMIT 1 done: the write opens the next
        assert order == ["write"]
        clock.advance(0.005)                                        # COMMIT 2 starts: the hook first
        assert order == ["write", "hook"]
        clock.pool.run()
        # Asked during a commit with nothing queued after it: called as soon as it is done.
        clock.advance(0.005)
        result_of(store.blacklist.add("1069", "+8613800000003", 3.0, None))
        clock.advance(0.005)
        assert store.before_commit(lambda: order.append("alone")) is True
        clock.pool.run()
        assert order[-1] == "alone" and not executor.db.conn.in_transaction
        result_of(store.close())


class TestEarlyReceiptRead:
    """A submit result reads for receipts that came before it only if this process stored an
    unmatched one within the window; an older one is left to the sweep (``matchable``)."""

    def _submitted(self, store: Any, mid: str, cid: str, at: float) -> list[Any]:
        result_of(store.messages.insert([_message(mid)]))
        (seg,) = result_of(store.messages.take_queued("cmcc", 1))
        return result_of(store.messages.record_submitted([SubmitAccepted(seg.id, "cmcc", cid, cid, at, False)]))

    def test_read_only_after_an_unmatched_receipt_within_the_window(self, tmp_path: Path) -> None:
        from bridge.store.sql import EARLY_RECEIPT_WINDOW_S

        store, executor = open_sqlite(tmp_path / "s.db", clock=Clock(), commit_interval_s=0)
        reads: list[str] = []
        executor.db.conn.set_trace_callback(lambda sql: reads.append(sql) if "FROM receipts_raw" in sql else None)
        assert self._submitted(store, "a", "1", T0) == [] and reads == []     # none stored: not read
        rid = result_of(store.receipts.insert_raw("cmcc", "2", "{}", T0, None, "unmatched"))
        early = self._submitted(store, "b", "2", T0 + 1)                       # came first: handed back
        assert [e.receipt_id for e in early] == [rid] and len(reads) == 1
        result_of(store.receipts.mark_matched(rid, early[0].segment_id, "applied"))
        late = result_of(store.receipts.insert_raw("cmcc", "3", "{}", T0 + 2, None, "unmatched"))
        reads.clear()
        assert self._submitted(store, "c", "3", T0 + 3 + EARLY_RECEIPT_WINDOW_S) == [] and reads == []
        assert [m.receipt_id for m in result_of(store.receipts.matchable(10))] == [late]   # the sweep's
        result_of(store.close())


class TestPeriodicQueries:
    """What runs every second or every pump reads an index, never a whole table: a scan
    costs time in proportion to the history kept (15 ms at 300,000 receipts for the
    receipt sweep before it read its partial index), on the reactor thread."""

    def _plans(self, tmp_path: Path, calls: Callable[[Any], list[Any]]) -> dict[str, list[str]]:
        store, executor = open_sqlite(tmp_path / "p.db", clock=Clock())
        seen: list[str] = []
        executor.db.conn.set_trace_callback(seen.append)
        for d in calls(store):
            result_of(d)
        executor.db.conn.set_trace_callback(None)
        plans = {}
        for sql in seen:
            if sql.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE")):
                plans[sql] = [row[-1] for row in executor.db.conn.execute("EXPLAIN QUERY PLAN " + sql)]
        result_of(store.close())
        return plans

    def test_periodic_reads_use_indexes(self, tmp_path: Path) -> None:
        now = 1_800_000_000.0
        plans = self._plans(tmp_path, lambda s: [
            s.receipts.matchable(500), s.receipts.unmatched_count(), s.outbox.next_due_at(),
            s.outbox.due(now, 100), s.outbox.open_counts(), s.outbox.pending_count(),
            s.messages.segment_state_counts(), s.messages.state_counts(),
            s.messages.overdue_segments(now), s.messages.release_held(now),
            s.messages.find_segment("cmcc", "77"), s.messages.get("m1"),   # (reported: from the outbox)
            s.messages.prune(now, 100), s.receipts.prune(now, 100), s.outbox.prune(now, 100), s.mo.prune(now, 100),
        ])
        assert len(plans) >= 15
        for sql, plan in plans.items():
            assert not [step for step in plan if step.startswith("SCAN ") and "INDEX" not in step], (sql, plan)
