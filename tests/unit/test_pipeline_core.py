"""The pipeline core on a real store and a Clock: finaliser, rules, dispatcher, receipts.

Behaviour runs on both backends (embedded SQLite and a real PostgreSQL, opened inline);
what is about SQLite's group commit, its file and its lock runs on SQLite only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import succeed
from twisted.internet.task import Clock

from bridge.config import StoreConfig
from bridge.dispatcher import Dispatcher, smpp_failure_status
from bridge.finaliser import Finaliser
from bridge.inbound import InboundHandler
from bridge.matching import ReceiptMatcher, ReceiptOutcome
from bridge.models import InboundMessage, MessageRecord, NewMessage, NewSegment
from bridge.receipts import StatusMap
from bridge.rules import FrequencyLimiter, SendingWindow, Verdict
from bridge.smpp.codec import Pdu
from bridge.smpp.types import BindStatus, OutboundSegment, StopReport, SubmitOutcome
from bridge.store import Store, lock_store, result_of
from bridge.store.sqlite import SqliteExecutor, open_sqlite
from carriers.profiles import format_message_id, load_profiles
from tests.conftest import Backend
from tests.storeopen import Opener

PROFILES, _ = load_profiles()


@pytest.fixture(name="clock")
def _clock() -> Clock:
    c = Clock()
    c.advance(1_800_000_000)
    return c


@pytest.fixture(name="opener")
def _opener(store_backend: Backend, clock: Clock, tmp_path: Path) -> Iterator[Opener]:
    opener = Opener(store_backend, clock, tmp_path / "s.db", commit_interval_s=0.005)
    yield opener
    opener.close_all()


@pytest.fixture(name="store")
def _store(opener: Opener) -> Store:
    """The store on each backend (SQLite in memory, with its 5 ms group commit on the clock)."""
    return opener.open(memory=True)


@pytest.fixture(name="sqlite_store")
def _sqlite_store(clock: Clock) -> Iterator[Store]:
    store, _ = open_sqlite(":memory:", clock=clock, commit_interval_s=0.005)
    yield store
    result_of(store.close())


def _message(mid: str, segments: int = 1, callback: str = "http://127.0.0.1:1/r", recipient: str = "+8613812345678",
             now: float = 1_800_000_000.0, counted: bool = True, content: str = "h") -> NewMessage:
    segs = tuple(NewSegment(i, segments, b"x", 8, 0x40 if segments > 1 else 0, 7 if segments > 1 else None, False)
                 for i in range(1, segments + 1))
    return NewMessage(id=mid, app_id="a", channel="10690001", recipient=recipient, carrier="cmcc", klass="otp",
                      text="t", content_hash=content, status_callback=callback, extend="e", created_at=now,
                      state="queued", status=None, org_code=None, release_at=None, segments=segs, counted=counted)


def _insert(store: Store, messages: list[NewMessage]) -> None:
    result_of(store.messages.insert(messages))


def _get(store: Store, mid: str) -> MessageRecord | None:
    return result_of(store.messages.get(mid))


def _report(store: Store, mid: str) -> dict[str, Any] | None:
    found = result_of(store.outbox.report_copy(mid))
    return json.loads(found.payload) if found else None


def _segment_ids(store: Store, carrier: str = "cmcc") -> list[int]:
    """Ids of the queued segments in seq order (taken, as the dispatcher takes them)."""
    return [s.id for s in result_of(store.messages.take_queued(carrier, 100))]


def _outbox_rows(store: Store) -> int:
    return sum(c.count for c in result_of(store.outbox.counts()))


def _run(clock: Clock, steps: int = 10) -> None:
    """Let group commits and the feeds waiting on them run (each commit schedules the next)."""
    for _ in range(steps):
        clock.advance(0.01)


class FakeLink:
    """Stands in for a carrier link's queue interface; the store under it is real."""

    def __init__(self, room: int = 100) -> None:
        self.queued: list[OutboundSegment] = []
        self._room = room

    def enqueue(self, segments: list[OutboundSegment]) -> None:
        self.queued.extend(segments)

    def room(self) -> int:
        return self._room - len(self.queued)

    def snapshot(self) -> list[BindStatus]:
        return []

    def start(self) -> None:
        pass

    def stop(self, drain_timeout_s: float) -> object:
        return succeed(StopReport(tuple(s.segment_id for s in self.queued), ()))


class TestGroupCommit:
    """SQLite only: the embedded store's group commit, its file and its lock."""

    def test_waiters_fire_only_after_the_commit(self, sqlite_store: Store, clock: Clock) -> None:
        """durable() waits for the group commit timer; one commit releases every waiter."""
        store = sqlite_store
        _insert(store, [_message("m1")])
        fired: list[int] = []
        store.durable().addCallback(lambda _: fired.append(1))
        store.durable().addCallback(lambda _: fired.append(2))
        assert fired == [] and store.commits == 0
        clock.advance(0.005)
        assert fired == [1, 2] and store.commits == 1

    def test_nothing_to_commit_fires_at_once(self, sqlite_store: Store) -> None:
        """With no open transaction durable() is already true."""
        fired: list[bool] = []
        sqlite_store.durable().addCallback(lambda _: fired.append(True))
        assert fired == [True]

    def test_a_restart_sees_only_committed_rows(self, tmp_path: Path, clock: Clock) -> None:
        """Rows written but not yet committed are gone after a crash (the store was never flushed)."""
        path = tmp_path / "s.db"
        first, executor = open_sqlite(path, clock=clock)
        _insert(first, [_message("kept")])
        result_of(first.flush())
        _insert(first, [_message("lost")])
        executor._conn.close()   # the process dies before the next group commit
        second, _ = open_sqlite(path, clock=clock)
        assert _get(second, "kept") is not None and _get(second, "lost") is None
        result_of(second.close())

    def test_store_lock_is_exclusive(self, tmp_path: Path) -> None:
        """Only one process (here: one holder) gets the store lock."""
        config = StoreConfig(path=tmp_path / "s.db")
        held = lock_store(config)
        assert held is not None and lock_store(config) is None
        held.close()
        again = lock_store(config)
        assert again is not None
        again.close()


class TestFinaliser:
    def test_long_message_reports_first_failing_segment(self, store: Store, clock: Clock) -> None:
        """A 3-part message is final when every part is: status of the first failing part, total 3."""
        _insert(store, [_message("m", segments=3)])
        fin = Finaliser(store, now=clock.seconds)
        ids = _segment_ids(store)
        assert len(ids) == 3
        assert result_of(fin.segment_final(ids[0], "DELIVRD", "DELIVRD")) is None
        assert result_of(fin.segment_final(ids[2], "EXPIRED", "MI:0013")) is None
        assert _report(store, "m") is None
        assert result_of(fin.segment_final(ids[1], "UNDELIV", "MK:0024")) == "m"
        report = _report(store, "m")
        assert report is not None
        assert report["status"] == "UNDELIV" and report["orgCode"] == "MK:0024" and report["sequence"] == 2
        assert report["total"] == 3 and report["extend"] == "e"

    def test_all_delivered_is_delivered(self, store: Store, clock: Clock) -> None:
        """DELIVRD only when every segment is DELIVRD."""
        _insert(store, [_message("m", segments=2)])
        fin = Finaliser(store, now=clock.seconds)
        for sid in _segment_ids(store):
            result_of(fin.segment_final(sid, "DELIVRD", "DELIVRD"))
        report = _report(store, "m")
        assert report is not None and report["status"] == "DELIVRD"

    def test_second_final_changes_nothing(self, store: Store, clock: Clock) -> None:
        """A duplicate receipt cannot finalise twice or queue a second report."""
        _insert(store, [_message("m")])
        fin = Finaliser(store, now=clock.seconds)
        (sid,) = _segment_ids(store)
        assert result_of(fin.segment_final(sid, "DELIVRD", "DELIVRD", total=1)) == "m"
        assert result_of(fin.segment_final(sid, "UNDELIV", "X", total=1)) is None
        assert _outbox_rows(store) == 1 and fin.reports_queued == 1
        msg = _get(store, "m")
        assert msg is not None and msg.status == "DELIVRD"

    def test_no_callback_no_report(self, store: Store, clock: Clock) -> None:
        """Messages without statusCallback are finalised but push nothing."""
        _insert(store, [_message("m", callback="")])
        assert result_of(Finaliser(store, now=clock.seconds).message_final("m", "REJECTD", "SC:0016", 0))
        msg = _get(store, "m")
        assert msg is not None and msg.state == "final" and _report(store, "m") is None
        assert _outbox_rows(store) == 0


def _check(limiter: FrequencyLimiter, store: Store, recipient: str, content: str, now: float) -> Verdict | None:
    """The verdict as intake reaches it: the counted sends of the last 24 h, from the store."""
    history = result_of(store.messages.recent_sends([recipient], now - 86_400))
    return limiter.check(recipient, content, now, history)


class TestRules:
    def test_frequency_windows(self, store: Store) -> None:
        """15 per minute, 2 same-content per 59 s, 50 per day; exempt numbers are never limited."""
        now = 1_800_000_000.0
        limiter = FrequencyLimiter(frozenset({"+8613900000001"}))
        _insert(store, [_message(f"a{i}", now=now - 30, content=f"c{i}") for i in range(15)])
        verdict = _check(limiter, store, "+8613812345678", "new", now)
        assert verdict is not None and verdict.status == "LIMIT"
        assert _check(limiter, store, "+8613812345678", "new", now + 31) is None
        other = "+8613812345679"
        _insert(store, [_message(f"b{i}", recipient=other, now=now - 10, content="same") for i in range(2)])
        verdict = _check(limiter, store, other, "same", now)
        assert verdict is not None and verdict.org_code == "SC:LIMIT59S"
        assert _check(limiter, store, other, "different", now) is None
        third = "+8613812345670"
        _insert(store, [_message(f"c{i}", recipient=third, now=now - 3600 - i * 60, content=f"{i}")
                        for i in range(50)])
        verdict = _check(limiter, store, third, "x", now)
        assert verdict is not None and verdict.status == "BEYONDN"
        exempt = "+8613900000001"
        _insert(store, [_message(f"e{i}", recipient=exempt, now=now - 10, content="x") for i in range(60)])
        assert _check(limiter, store, exempt, "x", now) is None

    def test_uncounted_messages_do_not_count(self, store: Store) -> None:
        """Messages stopped by a rule (not sent) do not use up the limits."""
        now = 1_800_000_000.0
        _insert(store, [_message(f"a{i}", now=now - 1, counted=False) for i in range(20)])
        assert _check(FrequencyLimiter(frozenset()), store, "+8613812345678", "h", now) is None

    @pytest.mark.parametrize(("local", "held_until"), [
        ("2026-11-25T21:59", None),
        ("2026-11-25T22:00", "2026-11-26T08:00"),
        ("2026-11-26T03:30", "2026-11-26T08:00"),
        ("2026-11-26T08:00", None),
    ])
    def test_sending_window_gmt8(self, local: str, held_until: str | None) -> None:
        """Quiet hours 22:00-08:00 GMT+8 hold until 08:00 local; outside them nothing is held."""
        def epoch(text: str) -> float:
            return datetime.fromisoformat(text + "+08:00").timestamp()
        window = SendingWindow(22 * 60, 8 * 60, 8.0)
        expected = epoch(held_until) if held_until else None
        assert window.release_at(epoch(local)) == expected


class TestDispatchAndReceipts:
    def _wire(self, store: Store, clock: Clock) -> tuple[Dispatcher, InboundHandler, FakeLink]:
        fin = Finaliser(store, now=clock.seconds)
        matcher = ReceiptMatcher(store, fin, StatusMap.load(), PROFILES, now=clock.seconds)
        disp = Dispatcher(store, fin, matcher, PROFILES, reactor=clock, now=clock.seconds)
        link = FakeLink()
        disp.add_link("cmcc", link)
        inbound = InboundHandler(store, matcher, mo=None)  # type: ignore[arg-type]
        return disp, inbound, link

    def _receipt(self, carrier_id: int, stat: str = "DELIVRD") -> InboundMessage:
        rid = format_message_id(PROFILES["cmcc"].receipt_id_dialect, carrier_id)
        text = f"id:{rid} sub:001 dlvrd:001 submit date:2611250400 done date:2611250401 stat:{stat} err:000 text:"
        pdu = Pdu("deliver_sm", 1, 0, {"esm_class": 4, "short_message": text.encode(), "source_addr": "8613812345678"})
        return InboundMessage.from_fields(pdu.fields)

    def _stop(self, disp: Dispatcher, clock: Clock) -> None:
        done = disp.stop(1.0)
        _run(clock)
        result_of(done)

    def test_receipt_before_submit_resp_is_applied_later(self, store: Store, clock: Clock) -> None:
        """A receipt for an id not stored yet is logged, then applied when the submit_sm_resp lands."""
        disp, inbound, link = self._wire(store, clock)
        _insert(store, [_message("m")])
        disp.start()
        _run(clock)
        assert len(link.queued) == 1
        status: list[int] = []
        inbound.on_deliver("cmcc", "cmcc-1", self._receipt(4242)).addCallback(status.append)
        _run(clock)
        msg = _get(store, "m")
        assert status == [0] and msg is not None and msg.state == "queued"
        seg = link.queued[0]
        disp.on_outcomes([SubmitOutcome(seg, 0, format_message_id("decimal", 4242), False, "cmcc-1")])
        msg = _get(store, "m")
        assert msg is not None and msg.status == "DELIVRD"
        assert inbound.receipts == {ReceiptOutcome.UNMATCHED: 1, "early_applied": 1}
        self._stop(disp, clock)

    def test_permanent_submit_error_is_final(self, store: Store, clock: Clock) -> None:
        """A refused destination ends REJECTD with the SMPP status kept in orgCode."""
        disp, _inbound, link = self._wire(store, clock)
        _insert(store, [_message("m")])
        disp.start()
        _run(clock)
        disp.on_outcomes([SubmitOutcome(link.queued[0], 0x0B, None, True, "cmcc-1")])
        msg = _get(store, "m")
        assert msg is not None and (msg.status, msg.org_code) == ("REJECTD", "SMPP:0x0000000B")
        assert smpp_failure_status(-1) == ("UNDELIV", "SMPP:NORESP")
        self._stop(disp, clock)

    def test_restart_resends_dispatched_segments_as_possible_duplicates(self, opener: Opener, clock: Clock) -> None:
        """Segments handed to a bind but unanswered at a crash are queued again, flagged."""
        store = opener.open()
        disp, _inbound, link = self._wire(store, clock)
        _insert(store, [_message("m")])
        disp.start()
        _run(clock)
        result_of(store.flush())
        assert link.queued and not link.queued[0].possible_duplicate
        disp._stopping = True          # crash: the old process and its timers are gone
        disp._ticker.cancel()
        opener.crash(store)
        again = opener.open()
        disp2, _i, link2 = self._wire(again, clock)
        disp2.start()
        _run(clock)
        assert len(link2.queued) == 1 and link2.queued[0].possible_duplicate
        self._stop(disp2, clock)

    def test_duplicate_and_unknown_receipts(self, store: Store, clock: Clock) -> None:
        """A second receipt for a final segment changes nothing; an unknown id stays unmatched."""
        disp, inbound, link = self._wire(store, clock)
        matcher = inbound._matcher
        _insert(store, [_message("m")])
        disp.start()
        _run(clock)
        disp.on_outcomes([SubmitOutcome(link.queued[0], 0, "77", False, "cmcc-1")])
        assert result_of(matcher.on_receipt("cmcc", self._receipt(77))) == ReceiptOutcome.APPLIED
        assert result_of(matcher.on_receipt("cmcc", self._receipt(77, "UNDELIV"))) == ReceiptOutcome.DUPLICATE
        assert result_of(matcher.on_receipt("cmcc", self._receipt(78))) == ReceiptOutcome.UNMATCHED
        msg = _get(store, "m")
        assert msg is not None and msg.status == "DELIVRD"
        assert result_of(store.receipts.unmatched_count()) == 1
        self._stop(disp, clock)

    def test_resent_segment_is_recorded_as_possible_duplicate(self, store: Store, clock: Clock) -> None:
        """A segment the link resent (it may have reached the SMSC twice) is flagged in the store."""
        import dataclasses

        disp, _inbound, link = self._wire(store, clock)
        _insert(store, [_message("m")])
        disp.start()
        _run(clock)
        resent = dataclasses.replace(link.queued[0], possible_duplicate=True)
        disp.on_outcomes([SubmitOutcome(resent, 0, "90", False, "cmcc-1")])
        assert result_of(store.messages.segment_details("m"))[0].possible_duplicate is True
        self._stop(disp, clock)


class TestHeld:
    def test_held_messages_are_released_when_the_window_opens(self, store: Store, clock: Clock) -> None:
        """A held message's segments stay out of the queue until release_at, then queue."""
        import dataclasses

        opens = clock.seconds() + 3600
        held = dataclasses.replace(_message("h"), state="held", release_at=opens)
        _insert(store, [held])
        assert result_of(store.messages.take_queued("cmcc", 10)) == []
        assert result_of(store.messages.release_held(clock.seconds())) == []
        assert result_of(store.messages.release_held(opens - 0.5)) == []   # released at release_at, not before
        assert result_of(store.messages.release_held(opens)) == ["h"]
        assert [s.message_id for s in result_of(store.messages.take_queued("cmcc", 10))] == ["h"]


def _sqlite_dispatcher(tmp_path: Path, clock: Clock) -> tuple[Store, SqliteExecutor, Dispatcher]:
    """A dispatcher over a real SQLite store whose group commit runs on ``clock``."""
    store, executor = open_sqlite(tmp_path / "s.db", clock=clock)
    fin = Finaliser(store, now=clock.seconds)
    matcher = ReceiptMatcher(store, fin, StatusMap.load(), PROFILES, now=clock.seconds)
    return store, executor, Dispatcher(store, fin, matcher, PROFILES, reactor=clock, now=clock.seconds)


class TestDispatchDurability:
    def test_segment_is_marked_dispatched_durably_before_it_is_sent(self, tmp_path: Path, clock: Clock) -> None:
        """SQLite group commit: a crash between hand-over and the next commit cannot lose the possible-duplicate mark."""
        store, _, disp = _sqlite_dispatcher(tmp_path, clock)
        link = FakeLink()
        disp.add_link("cmcc", link)
        _insert(store, [_message("m")])
        result_of(store.flush())
        disp.kick()                  # feeds at the next turn of the reactor
        clock.advance(0)
        assert link.queued == []     # taken and marked, but not handed over before the mark commits
        assert [s.state for s in result_of(store.messages.segment_details("m"))] == ["dispatched"]
        clock.advance(0.01)
        assert len(link.queued) == 1
        reopened, _ = open_sqlite(tmp_path / "s.db", clock=clock)
        assert [s.state for s in result_of(reopened.messages.segment_details("m"))] == ["dispatched"]
        result_of(reopened.close())
        result_of(store.close())

    def test_queued_and_dispatched_share_one_commit(self, tmp_path: Path, clock: Clock) -> None:
        """Kicked while the rows that queued a segment are uncommitted, the dispatcher takes it in
        the same transaction: one group commit later it is sent (not two), never before."""
        store, executor, disp = _sqlite_dispatcher(tmp_path, clock)
        link = FakeLink()
        disp.add_link("cmcc", link)
        _insert(store, [_message("m")])   # intake's rows, in the open transaction
        disp.kick()
        clock.advance(0)
        assert executor.commits == 0 and link.queued == []
        clock.advance(0.01)
        assert executor.commits == 1
        assert len(link.queued) == 1
        reopened, _ = open_sqlite(tmp_path / "s.db", clock=clock)
        assert [s.state for s in result_of(reopened.messages.segment_details("m"))] == ["dispatched"]
        result_of(reopened.close())
        result_of(store.close())

    def test_kicks_within_one_group_commit_are_fed_by_one_take(self, tmp_path: Path, clock: Clock) -> None:
        """Requests admitted while a transaction is open are taken together just before its
        commit: one statement for the three, not one per kick, and sent after that commit."""
        store, executor, disp = _sqlite_dispatcher(tmp_path, clock)
        link = FakeLink()
        disp.add_link("cmcc", link)
        takes: list[str] = []
        executor.db.conn.set_trace_callback(
            lambda sql: takes.append(sql) if sql.startswith("UPDATE segments SET state = 'dispatched'") else None)
        for name in ("a", "b", "c"):
            _insert(store, [_message(name)])
            disp.kick({"cmcc"})
            clock.advance(0.001)
        assert takes == [] and link.queued == []
        clock.advance(0.01)
        assert len(takes) == 1 and executor.commits == 1
        assert len(link.queued) == 3
        result_of(store.close())

    def test_every_link_fed_at_a_commit_is_handed_its_own_segments(self, tmp_path: Path, clock: Clock) -> None:
        """One feed for two carriers (one store call): each link gets its carrier's segments, up
        to its room; what did not fit stays queued for the next feed."""
        import dataclasses

        store, _, disp = _sqlite_dispatcher(tmp_path, clock)
        cmcc, cucc = FakeLink(), FakeLink()
        cucc._room = 1
        disp.add_link("cmcc", cmcc)
        disp.add_link("cucc", cucc)
        _insert(store, [_message("m"), *(dataclasses.replace(_message(f"u{i}", recipient="+8613012345678"),
                                                            carrier="cucc") for i in range(2))])
        disp.kick({"cmcc", "cucc"})
        clock.advance(0.01)
        assert [s.carrier for s in cmcc.queued] == ["cmcc"] and [s.carrier for s in cucc.queued] == ["cucc"]
        assert sorted(s.state for s in result_of(store.messages.segment_details("u1"))) == ["queued"]
        result_of(store.close())

    def test_a_kick_naming_carriers_feeds_only_their_links(self, tmp_path: Path, clock: Clock) -> None:
        """Intake names the carriers it queued for: the other links are not asked about (one store
        statement per link fed), until a kick for every link, e.g. the periodic one."""
        import dataclasses

        store, executor, disp = _sqlite_dispatcher(tmp_path, clock)
        cmcc, cucc = FakeLink(), FakeLink()
        disp.add_link("cmcc", cmcc)
        disp.add_link("cucc", cucc)
        _insert(store, [_message("m"), dataclasses.replace(_message("u", recipient="+8613012345678"),
                                                          carrier="cucc")])
        before = executor.statements.n
        disp.kick({"cmcc"})
        disp.kick({"cmcc"})
        clock.advance(0.01)
        assert [s.carrier for s in cmcc.queued] == ["cmcc"] and cucc.queued == []
        assert executor.statements.n - before == 1   # one take (cmcc's), no query for cucc
        disp.kick()
        clock.advance(0)
        clock.advance(0.01)
        assert [s.carrier for s in cucc.queued] == ["cucc"]
        result_of(store.close())

    def test_segments_a_link_lost_room_for_go_back_to_the_queue(self, tmp_path: Path, clock: Clock) -> None:
        """Taken while the link had a bind, answered after it lost it (a cluster slot handed
        over): the segment is not stranded in a link nobody sends from, it is queued again."""
        store, _, disp = _sqlite_dispatcher(tmp_path, clock)
        link = FakeLink()
        disp.add_link("cmcc", link)
        _insert(store, [_message("m")])
        result_of(store.flush())
        disp.kick()                  # taken; handed over after the mark commits
        clock.advance(0)
        link._room = 0               # ...by which time the link has no bind left
        clock.advance(0.01)
        assert link.queued == []
        assert [s.state for s in result_of(store.messages.segment_details("m"))] == ["queued"]
        link._room = 100             # a bind again: the next feed takes it
        disp.kick()
        _run(clock)
        assert len(link.queued) == 1 and link.queued[0].possible_duplicate is False
        result_of(store.close())
