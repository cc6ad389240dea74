"""The pipeline core on a real SQLite store and a Clock: finaliser, rules, dispatcher, receipts."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
from twisted.internet.defer import succeed
from twisted.internet.task import Clock

from bridge.dispatcher import Dispatcher, smpp_failure_status
from bridge.finaliser import Finaliser
from bridge.inbound import InboundHandler, ReceiptOutcome
from bridge.models import NewMessage, NewSegment
from bridge.receipts import StatusMap
from bridge.rules import FrequencyLimiter, SendingWindow
from bridge.smpp.codec import Pdu
from bridge.smpp.types import BindStatus, OutboundSegment, StopReport, SubmitOutcome
from bridge.store import Store, try_lock_store
from carriers.profiles import format_message_id, load_profiles

PROFILES, _ = load_profiles()


@pytest.fixture(name="clock")
def _clock() -> Clock:
    c = Clock()
    c.advance(1_800_000_000)
    return c


@pytest.fixture(name="store")
def _store(clock: Clock) -> Store:
    return Store(":memory:", clock=clock, commit_interval_s=0.005)


def _message(mid: str, segments: int = 1, callback: str = "http://127.0.0.1:1/r", recipient: str = "+8613812345678",
             now: float = 1_800_000_000.0, counted: bool = True, content: str = "h") -> NewMessage:
    segs = tuple(NewSegment(i, segments, b"x", 8, 0x40 if segments > 1 else 0, 7 if segments > 1 else None, False)
                 for i in range(1, segments + 1))
    return NewMessage(id=mid, app_id="a", channel="10690001", recipient=recipient, carrier="cmcc", klass="otp",
                      text="t", content_hash=content, status_callback=callback, extend="e", created_at=now,
                      state="queued", status=None, org_code=None, release_at=None, segments=segs, counted=counted)


def _report(store: Store, mid: str) -> dict | None:
    found = store.report_payload(mid)
    return json.loads(found[1]) if found else None


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
    def test_waiters_fire_only_after_the_commit(self, store: Store, clock: Clock) -> None:
        """durable() waits for the group commit timer; one commit releases every waiter."""
        store.insert_messages([_message("m1")])
        fired: list[int] = []
        store.durable().addCallback(lambda _: fired.append(1))
        store.durable().addCallback(lambda _: fired.append(2))
        assert fired == [] and store.commits == 0
        clock.advance(0.005)
        assert fired == [1, 2] and store.commits == 1

    def test_nothing_to_commit_fires_at_once(self, store: Store) -> None:
        """With no open transaction durable() is already true."""
        fired: list[bool] = []
        store.durable().addCallback(lambda _: fired.append(True))
        assert fired == [True]

    def test_a_restart_sees_only_committed_rows(self, tmp_path: Path, clock: Clock) -> None:
        """Rows written but not yet committed are gone after a crash (the store was never flushed)."""
        path = tmp_path / "s.db"
        first = Store(path, clock=clock)
        first.insert_messages([_message("kept")])
        first.flush()
        first.insert_messages([_message("lost")])
        first._conn.close()   # the process dies before the next group commit
        second = Store(path, clock=clock)
        assert second.get_message("kept") is not None and second.get_message("lost") is None

    def test_store_lock_is_exclusive(self, tmp_path: Path) -> None:
        """Only one process (here: one holder) gets the store lock."""
        held = try_lock_store(tmp_path / "s.db")
        assert held is not None and try_lock_store(tmp_path / "s.db") is None
        held.close()
        assert try_lock_store(tmp_path / "s.db") is not None


class TestFinaliser:
    def test_long_message_reports_first_failing_segment(self, store: Store, clock: Clock) -> None:
        """A 3-part message is final when every part is: status of the first failing part, total 3."""
        store.insert_messages([_message("m", segments=3)])
        fin = Finaliser(store, now=clock.seconds)
        ids = [r[0] for r in store._r("SELECT id FROM segments WHERE message_id = 'm' ORDER BY seq")]
        assert fin.segment_final(ids[0], "DELIVRD", "DELIVRD") is None
        assert fin.segment_final(ids[2], "EXPIRED", "MI:0013") is None
        assert _report(store, "m") is None
        assert fin.segment_final(ids[1], "UNDELIV", "MK:0024") == "m"
        report = _report(store, "m")
        assert report["status"] == "UNDELIV" and report["orgCode"] == "MK:0024" and report["sequence"] == 2
        assert report["total"] == 3 and report["extend"] == "e"

    def test_all_delivered_is_delivered(self, store: Store, clock: Clock) -> None:
        """DELIVRD only when every segment is DELIVRD."""
        store.insert_messages([_message("m", segments=2)])
        fin = Finaliser(store, now=clock.seconds)
        for (sid,) in store._r("SELECT id FROM segments WHERE message_id = 'm'"):
            fin.segment_final(sid, "DELIVRD", "DELIVRD")
        assert _report(store, "m")["status"] == "DELIVRD"

    def test_second_final_changes_nothing(self, store: Store, clock: Clock) -> None:
        """A duplicate receipt cannot finalise twice or queue a second report."""
        store.insert_messages([_message("m")])
        fin = Finaliser(store, now=clock.seconds)
        (sid,) = store._r("SELECT id FROM segments")[0]
        assert fin.segment_final(sid, "DELIVRD", "DELIVRD", total=1) == "m"
        assert fin.segment_final(sid, "UNDELIV", "X", total=1) is None
        assert store._r("SELECT COUNT(*) FROM outbox")[0][0] == 1 and fin.reports_queued == 1
        assert store.get_message("m").status == "DELIVRD"

    def test_no_callback_no_report(self, store: Store, clock: Clock) -> None:
        """Messages without statusCallback are finalised but push nothing."""
        store.insert_messages([_message("m", callback="")])
        assert Finaliser(store, now=clock.seconds).message_final("m", "REJECTD", "SC:0016", 0)
        assert store.get_message("m").state == "final" and _report(store, "m") is None


class TestRules:
    def test_frequency_windows(self, store: Store) -> None:
        """15 per minute, 2 same-content per 59 s, 50 per day; exempt numbers are never limited."""
        now = 1_800_000_000.0
        limiter = FrequencyLimiter(store, frozenset({"+8613900000001"}))
        store.insert_messages([_message(f"a{i}", now=now - 30, content=f"c{i}") for i in range(15)])
        assert limiter.check("+8613812345678", "new", now).status == "LIMIT"
        assert limiter.check("+8613812345678", "new", now + 31) is None
        other = "+8613812345679"
        store.insert_messages([_message(f"b{i}", recipient=other, now=now - 10, content="same") for i in range(2)])
        assert limiter.check(other, "same", now).org_code == "SC:LIMIT59S"
        assert limiter.check(other, "different", now) is None
        third = "+8613812345670"
        store.insert_messages([_message(f"c{i}", recipient=third, now=now - 3600 - i * 60, content=f"{i}")
                               for i in range(50)])
        assert limiter.check(third, "x", now).status == "BEYONDN"
        assert limiter.check("+8613900000001", "x", now) is None

    def test_uncounted_messages_do_not_count(self, store: Store) -> None:
        """Messages stopped by a rule (not sent) do not use up the limits."""
        now = 1_800_000_000.0
        store.insert_messages([_message(f"a{i}", now=now - 1, counted=False) for i in range(20)])
        assert FrequencyLimiter(store, frozenset()).check("+8613812345678", "h", now) is None

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
        disp = Dispatcher(store, fin, PROFILES, reactor=clock, now=clock.seconds)
        link = FakeLink()
        disp.add_link("cmcc", link)
        inbound = InboundHandler(store, fin, disp, StatusMap.load(), PROFILES, mo=None, now=clock.seconds)  # type: ignore[arg-type]
        return disp, inbound, link

    def _receipt(self, carrier_id: int, stat: str = "DELIVRD") -> Pdu:
        rid = format_message_id(PROFILES["cmcc"].receipt_id_dialect, carrier_id)
        text = f"id:{rid} sub:001 dlvrd:001 submit date:2611250400 done date:2611250401 stat:{stat} err:000 text:"
        return Pdu("deliver_sm", 1, 0, {"esm_class": 4, "short_message": text.encode(), "source_addr": "8613812345678"})

    def test_receipt_before_submit_resp_is_applied_later(self, store: Store, clock: Clock) -> None:
        """A receipt for an id not stored yet is logged, then applied when the submit_sm_resp lands."""
        disp, inbound, link = self._wire(store, clock)
        store.insert_messages([_message("m")])
        disp.start()
        _run(clock)
        assert len(link.queued) == 1
        status: list[int] = []
        inbound.on_deliver("cmcc", "cmcc-1", self._receipt(4242)).addCallback(status.append)
        _run(clock)
        assert status == [0] and store.get_message("m").state == "queued"
        seg = link.queued[0]
        disp.on_outcomes([SubmitOutcome(seg, 0, format_message_id("decimal", 4242), False, "cmcc-1")])
        assert store.get_message("m").status == "DELIVRD"
        assert inbound.receipts == {ReceiptOutcome.UNMATCHED: 1, "early_applied": 1}
        disp.stop(1.0)

    def test_permanent_submit_error_is_final(self, store: Store, clock: Clock) -> None:
        """A refused destination ends REJECTD with the SMPP status kept in orgCode."""
        disp, _inbound, link = self._wire(store, clock)
        store.insert_messages([_message("m")])
        disp.start()
        _run(clock)
        disp.on_outcomes([SubmitOutcome(link.queued[0], 0x0B, None, True, "cmcc-1")])
        msg = store.get_message("m")
        assert (msg.status, msg.org_code) == ("REJECTD", "SMPP:0x0000000B")
        assert smpp_failure_status(-1) == ("UNDELIV", "SMPP:NORESP")
        disp.stop(1.0)

    def test_restart_resends_dispatched_segments_as_possible_duplicates(self, tmp_path: Path, clock: Clock) -> None:
        """Segments handed to a bind but unanswered at a crash are queued again, flagged."""
        path = tmp_path / "s.db"
        store = Store(path, clock=clock)
        disp, _inbound, link = self._wire(store, clock)
        store.insert_messages([_message("m")])
        disp.start()
        _run(clock)
        store.flush()
        assert link.queued and not link.queued[0].possible_duplicate
        disp._stopping = True          # crash: the old process and its timers are gone
        disp._ticker.cancel()
        store._conn.close()
        again = Store(path, clock=clock)
        disp2, _i, link2 = self._wire(again, clock)
        disp2.start()
        _run(clock)
        assert len(link2.queued) == 1 and link2.queued[0].possible_duplicate
        disp2.stop(1.0)

    def test_duplicate_and_unknown_receipts(self, store: Store, clock: Clock) -> None:
        """A second receipt for a final segment changes nothing; an unknown id stays unmatched."""
        disp, inbound, link = self._wire(store, clock)
        store.insert_messages([_message("m")])
        disp.start()
        _run(clock)
        disp.on_outcomes([SubmitOutcome(link.queued[0], 0, "77", False, "cmcc-1")])
        assert inbound.on_receipt("cmcc", self._receipt(77).fields) == ReceiptOutcome.APPLIED
        assert inbound.on_receipt("cmcc", self._receipt(77, "UNDELIV").fields) == ReceiptOutcome.DUPLICATE
        assert inbound.on_receipt("cmcc", self._receipt(78).fields) == ReceiptOutcome.UNMATCHED
        assert store.get_message("m").status == "DELIVRD" and store.unmatched_receipt_count() == 1
        disp.stop(1.0)

    def test_resent_segment_is_recorded_as_possible_duplicate(self, store: Store, clock: Clock) -> None:
        """A segment the link resent (it may have reached the SMSC twice) is flagged in the store."""
        import dataclasses

        disp, _inbound, link = self._wire(store, clock)
        store.insert_messages([_message("m")])
        disp.start()
        _run(clock)
        resent = dataclasses.replace(link.queued[0], possible_duplicate=True)
        disp.on_outcomes([SubmitOutcome(resent, 0, "90", False, "cmcc-1")])
        assert store.segment_details("m")[0].possible_duplicate is True
        disp.stop(1.0)


class TestHeld:
    def test_held_messages_are_released_when_the_window_opens(self, store: Store, clock: Clock) -> None:
        """A held message's segments stay out of the queue until release_at, then queue."""
        import dataclasses

        opens = clock.seconds() + 3600
        held = dataclasses.replace(_message("h"), state="held", release_at=opens)
        store.insert_messages([held])
        assert store.take_queued("cmcc", 10) == [] and store.release_held(clock.seconds()) == []
        assert store.next_release_at() == opens
        assert store.release_held(opens) == ["h"]
        assert [s.message_id for s in store.take_queued("cmcc", 10)] == ["h"]


class TestDispatchDurability:
    def test_segment_is_marked_dispatched_durably_before_it_is_sent(self, tmp_path: Path, clock: Clock) -> None:
        """A crash between hand-over and the next commit cannot lose the possible-duplicate mark."""
        store = Store(tmp_path / "s.db", clock=clock)
        fin = Finaliser(store, now=clock.seconds)
        disp = Dispatcher(store, fin, PROFILES, reactor=clock, now=clock.seconds)
        link = FakeLink()
        disp.add_link("cmcc", link)
        store.insert_messages([_message("m")])
        store.flush()
        disp.kick()                  # feeds after a commit (nothing pending: at once)
        assert link.queued == []     # taken and marked, but not handed over before the mark commits
        clock.advance(0.01)
        assert len(link.queued) == 1
        reopened = Store(tmp_path / "s.db", clock=clock)
        assert reopened._r("SELECT state FROM segments")[0][0] == "dispatched"
