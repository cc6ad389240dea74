"""The store contract: every backend gives the same answers to the same calls.

Each test runs on the embedded SQLite store and on a real PostgreSQL server (see
``store_backend`` in tests/conftest.py), both opened inline so results are read at once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import psycopg
import pytest

from bridge.finaliser import final_choice
from bridge.models import NewMessage, NewMo, NewSegment
from bridge.store import Store, StoreError, open_store, result_of
from bridge.store.records import (
    AdmissionFacts,
    AdmissionQuery,
    CarrierRoom,
    MoPart,
    PushKind,
    PushState,
    ReceiptArrival,
    ReceiptOutcome,
    SubmitAccepted,
)
from bridge.store.schema import MIGRATIONS
from tests.conftest import Backend

T0 = 1_800_000_000.0


@pytest.fixture(name="store")
def _store(store_backend: Backend) -> Iterator[Store]:
    store = open_store(store_backend.config, inline=True)
    yield store
    result_of(store.close())


def _msg(mid: str, *, carrier: str = "cmcc", segments: int = 1, state: str = "queued", at: float = T0,
         recipient: str = "+8613812345678", counted: bool = True, content: str = "h",
         release_at: float | None = None) -> NewMessage:
    segs = tuple(NewSegment(i, segments, bytes([0, i, 255]), 8, 0x40 if segments > 1 else 0,
                            7 if segments > 1 else None, False) for i in range(1, segments + 1))
    return NewMessage(id=mid, app_id="a", channel="10690001", recipient=recipient, carrier=carrier, klass="otp",
                      text="t", content_hash=content, status_callback="http://r.example/cb", extend="x",
                      created_at=at, state=state, status=None, org_code=None, release_at=release_at,
                      segments=segs, counted=counted)


def r(d):  # noqa: ANN001, ANN201 (short reader for fired Deferreds)
    return result_of(d)


class TestMessages:
    def test_insert_then_read_back_exactly(self, store: Store) -> None:
        """Records come back as written: octets of each segment, states, totals."""
        r(store.messages.insert([_msg("m1", segments=2)]))
        msg = r(store.messages.get("m1"))
        assert msg.total == 2 and msg.state == "queued" and msg.reported is False and msg.extend == "x"
        taken = r(store.messages.take_queued("cmcc", 10))
        assert [s.short_message for s in taken] == [bytes([0, 1, 255]), bytes([0, 2, 255])]
        assert [d.state for d in r(store.messages.segment_details("m1"))] == ["dispatched", "dispatched"]
        assert r(store.messages.get("nope")) is None

    def test_statements_are_counted(self, store: Store) -> None:
        """One message row and its two segment rows: three statements (the work per message, in /metrics)."""
        before = store.statements
        r(store.messages.insert([_msg("a", segments=2)]))
        assert store.statements - before == 3

    def test_take_queued_oldest_first_per_carrier_and_limited(self, store: Store) -> None:
        """A take claims the oldest queued segments of one carrier, at most ``limit``."""
        r(store.messages.insert([_msg("a", segments=3), _msg("b", carrier="cucc"), _msg("c")]))
        first = r(store.messages.take_queued("cmcc", 2))
        assert [(s.message_id, s.seq) for s in first] == [("a", 1), ("a", 2)]
        second = r(store.messages.take_queued("cmcc", 10))
        assert [(s.message_id, s.seq) for s in second] == [("a", 3), ("c", 1)]
        assert r(store.messages.take_queued("cmcc", 10)) == []
        assert [s.message_id for s in r(store.messages.take_queued("cucc", 10))] == ["b"]
        assert r(store.messages.take_queued("cmcc", 0)) == []

    def test_one_take_for_several_carriers_limits_each_on_its_own(self, store: Store) -> None:
        """``take_queued_for``: each carrier's oldest segments up to its own limit, in one call."""
        r(store.messages.insert([_msg("a", segments=3), _msg("b", carrier="cucc"), _msg("c"),
                                 _msg("d", carrier="cucc"), _msg("e", carrier="ctcc")]))
        taken = r(store.messages.take_queued_for([CarrierRoom("cmcc", 2), CarrierRoom("cucc", 5),
                                                  CarrierRoom("ctcc", 0)]))
        assert sorted((s.carrier, s.message_id, s.seq) for s in taken) == [
            ("cmcc", "a", 1), ("cmcc", "a", 2), ("cucc", "b", 1), ("cucc", "d", 1)]
        assert [(s.message_id, s.seq) for s in r(store.messages.take_queued("cmcc", 10))] == [("a", 3), ("c", 1)]
        assert [s.message_id for s in r(store.messages.take_queued("ctcc", 10))] == ["e"]
        assert r(store.messages.take_queued_for([CarrierRoom("cmcc", 5), CarrierRoom("cucc", 5)])) == []

    def test_requeue_and_restart_flag_possible_duplicates(self, store: Store) -> None:
        """Requeued segments go out again; after a crash every dispatched one is flagged."""
        r(store.messages.insert([_msg("a"), _msg("b")]))
        a, b = r(store.messages.take_queued("cmcc", 10))
        r(store.messages.requeue([a.id], possible_duplicate=False))
        assert r(store.messages.requeue_all_dispatched()) == 1
        again = r(store.messages.take_queued("cmcc", 10))
        assert {(s.message_id, s.possible_duplicate) for s in again} == {("a", False), ("b", True)}

    def test_submit_result_and_receipt_that_came_first(self, store: Store) -> None:
        """A receipt stored unmatched is handed back when its submit result is stored."""
        r(store.messages.insert([_msg("a")]))
        (seg,) = r(store.messages.take_queued("cmcc", 1))
        rid = r(store.receipts.insert_raw("cmcc", "77", '{"r":1}', T0, None, "unmatched"))
        early = r(store.messages.record_submitted([SubmitAccepted(seg.id, "cmcc", "77", "0x4D", T0, False)]))
        assert [(e.receipt_id, e.segment_id, e.receipt_json) for e in early] == [(rid, seg.id, '{"r":1}')]
        match = r(store.messages.find_segment("cmcc", "77"))
        assert match.segment_id == seg.id and match.state == "submitted" and match.total == 1
        assert r(store.messages.find_segment("cucc", "77")) is None
        assert [m.segment_id for m in r(store.receipts.matchable(10))] == [seg.id]
        r(store.receipts.mark_matched(rid, seg.id, "applied"))
        assert r(store.receipts.matchable(10)) == [] and r(store.receipts.unmatched_count()) == 0

    def test_finalising_happens_once(self, store: Store) -> None:
        """A segment and a message are made final once; repeats change nothing."""
        r(store.messages.insert([_msg("a", segments=2)]))
        s1, s2 = r(store.messages.take_queued("cmcc", 2))
        first = r(store.messages.record_segment_final(s1.id, "DELIVRD", "DELIVRD", T0))
        assert first.message_id == "a" and [s.state for s in first.segments] == ["final", "dispatched"]
        assert r(store.messages.record_segment_final(s1.id, "UNDELIV", "X", T0)) is None
        last = r(store.messages.record_segment_final(s2.id, "UNDELIV", "UNDELIV/1", T0, submit_status=0x45))
        assert [(s.seq, s.state, s.status) for s in last.segments] == [(1, "final", "DELIVRD"), (2, "final", "UNDELIV")]
        assert list(last.segments) == r(store.messages.segments_of("a"))
        assert r(store.messages.unfinished_with_final_segments()) == ["a"]
        done = r(store.messages.finalise_message("a", "UNDELIV", "UNDELIV/1", 2, T0 + 1, lambda m: f'{{"id":"{m.id}"}}'))
        msg = done.message
        assert msg.state == "final" and msg.status == "UNDELIV" and msg.final_at == T0 + 1
        assert r(store.outbox.report_copy("a")).payload == '{"id":"a"}'
        # The queued report comes back as the row the pusher would fetch.
        assert done.report == r(store.outbox.due(T0 + 1, 10))[0]
        assert r(store.messages.finalise_message("a", "DELIVRD", "", 1, T0 + 2)) is None
        assert r(store.messages.unfinished_with_final_segments()) == []

    def test_receipt_applied_in_one_call(self, store: Store, store_backend: Backend) -> None:
        """One call per receipt: match the newest segment with the id, make it final, finalise its
        message with the deciding status and queue its report, log the raw receipt with its outcome."""
        r(store.messages.insert([_msg("one"), _msg("two", segments=2)]))
        one, s1, s2 = sorted(r(store.messages.take_queued("cmcc", 3)), key=lambda s: s.id)
        r(store.messages.record_submitted([SubmitAccepted(one.id, "cmcc", "10", "10", T0, False),
                                           SubmitAccepted(s1.id, "cmcc", "21", "21", T0, False),
                                           SubmitAccepted(s2.id, "cmcc", "22", "22", T0, False)]))

        def arrival(cid: str, status: str = "DELIVRD", final: bool = True, at: float = T0 + 5) -> ReceiptArrival:
            return ReceiptArrival("cmcc", cid, final, status, status + "/x", at, f'{{"id":"{cid}"}}')

        def report(msg, choice) -> str:  # noqa: ANN001
            return f'{{"id":"{msg.id}","status":"{choice.status}","seq":{choice.seq}}}'

        before = store.statements
        got = r(store.messages.apply_receipt(arrival("10"), final_choice, report))
        # The one-part message: segment found and made final in one statement, message, report, raw row.
        assert store.statements - before == (4 if store_backend.name == "sqlite" else 5)
        assert got.outcome == ReceiptOutcome.APPLIED and got.segment_id == one.id
        assert got.finalised.message.status == "DELIVRD" and got.finalised.message.final_at == T0 + 5
        assert got.finalised.report.payload == '{"id":"one","status":"DELIVRD","seq":1}'
        assert got.finalised.report == r(store.outbox.due(T0 + 5, 10))[0]
        # An intermediate receipt changes nothing; an unknown id is logged unmatched.
        mid = r(store.messages.apply_receipt(arrival("21", "ENROUTE", final=False), final_choice, report))
        assert (mid.outcome, mid.segment_id, mid.finalised) == (ReceiptOutcome.INTERMEDIATE, s1.id, None)
        assert r(store.messages.apply_receipt(arrival("99"), final_choice, report)).outcome == ReceiptOutcome.UNMATCHED
        # A long message is final with its last segment, with the first failing segment's status.
        first = r(store.messages.apply_receipt(arrival("21", "UNDELIV"), final_choice, report))
        assert (first.outcome, first.finalised) == (ReceiptOutcome.APPLIED, None)
        last = r(store.messages.apply_receipt(arrival("22"), final_choice, report))
        assert last.finalised.message.status == "UNDELIV" and last.finalised.message.org_code == "UNDELIV/x"
        assert last.finalised.report.payload == '{"id":"two","status":"UNDELIV","seq":1}'
        assert [(d.seq, d.status) for d in r(store.messages.segment_details("two"))] == [(1, "UNDELIV"), (2, "DELIVRD")]
        again = r(store.messages.apply_receipt(arrival("22", "UNDELIV"), final_choice, report))
        assert (again.outcome, again.segment_id, again.finalised) == (ReceiptOutcome.DUPLICATE, s2.id, None)
        logged = r(store.receipts.raw(since=None, until=None, unmatched_only=False, carrier="cmcc"))
        assert [x.receipt_json for x in logged] == ['{"id":"10"}', '{"id":"21"}', '{"id":"99"}', '{"id":"21"}',
                                               '{"id":"22"}', '{"id":"22"}']
        assert r(store.receipts.unmatched_count()) == 1
        assert [(x.seq, x.outcome) for x in r(store.receipts.of_message("two", T0))] == [
            (1, "intermediate"), (1, "applied"), (2, "applied"), (2, "duplicate")]

    def test_repeated_receipt_repairs_a_message_left_unfinished(self, store: Store) -> None:
        """A crash between a segment's final state and its message's: the carrier's redelivery
        finds the segment final and finalises the message (duplicate, report queued once)."""
        r(store.messages.insert([_msg("a")]))
        (seg,) = r(store.messages.take_queued("cmcc", 1))
        r(store.messages.record_submitted([SubmitAccepted(seg.id, "cmcc", "7", "7", T0, False)]))
        r(store.messages.record_segment_final(seg.id, "DELIVRD", "DELIVRD", T0))
        arrival = ReceiptArrival("cmcc", "7", True, "DELIVRD", "DELIVRD", T0 + 1, "{}")
        got = r(store.messages.apply_receipt(arrival, final_choice, lambda m, c: "{}"))
        assert got.outcome == ReceiptOutcome.DUPLICATE and got.finalised.message.state == "final"
        assert r(store.messages.apply_receipt(arrival, final_choice, lambda m, c: "{}")).finalised is None
        assert len(r(store.outbox.due(T0 + 1, 10))) == 1

    def test_overdue_and_held(self, store: Store) -> None:
        """Overdue submitted segments are listed; held messages move to the queue when due."""
        r(store.messages.insert([_msg("a"), _msg("h", state="held", release_at=T0 + 100)]))
        (seg,) = r(store.messages.take_queued("cmcc", 5))
        r(store.messages.record_submitted([SubmitAccepted(seg.id, "cmcc", "1", "1", T0, False)]))
        assert r(store.messages.overdue_segments(T0 + 1)) == [seg.id]
        assert r(store.messages.overdue_segments(T0)) == []
        assert r(store.messages.release_held(T0 + 50)) == []
        assert r(store.messages.reschedule_held(T0 + 10)) == 1
        assert r(store.messages.release_held(T0 + 50)) == ["h"]
        assert [s.message_id for s in r(store.messages.take_queued("cmcc", 5))] == ["h"]

    def test_recent_sends_for_the_limits(self, store: Store) -> None:
        """Only counted messages since the cut-off, for the numbers asked."""
        r(store.messages.insert([
            _msg("a", recipient="+8613800000001", at=T0 - 10, content="x"),
            _msg("b", recipient="+8613800000001", at=T0 - 100_000),
            _msg("c", recipient="+8613800000001", at=T0 - 5, counted=False),
            _msg("d", recipient="+8613800000002", at=T0 - 1, content="y"),
        ]))
        got = r(store.messages.recent_sends(["+8613800000001", "+8613800000002", "+8613800000003"], T0 - 86_400))
        assert sorted((s.recipient, s.content_hash) for s in got) == [("+8613800000001", "x"),
                                                                       ("+8613800000002", "y")]

    def test_failed_call_fails_alone(self, store: Store) -> None:
        """A call that violates the schema fails with StoreError; the store stays usable."""
        r(store.messages.insert([_msg("a")]))
        with pytest.raises(StoreError):
            r(store.messages.insert([_msg("a")]))
        r(store.durable())
        r(store.messages.insert([_msg("b")]))
        r(store.durable())
        assert r(store.messages.get("b")) is not None


class TestAdmission:
    @pytest.mark.parametrize("recipients", [3, 1200], ids=["one-statement", "chunked"])
    def test_facts_are_the_blacklist_and_the_counted_sends_of_the_rest(self, store: Store, recipients: int) -> None:
        """Blacklisted numbers, and recent counted sends of the others only (a blacklisted number's
        sends, uncounted messages and those before ``since`` are not facts); the messages decided
        are inserted in the same call. Long requests read in chunks and agree."""
        numbers = [f"+86138{n:08d}" for n in range(recipients)]
        black, sent, quiet = numbers[0], numbers[1], numbers[2]
        r(store.blacklist.add("10690001", black, T0, None))
        r(store.messages.insert([
            _msg("s1", recipient=sent, at=T0 - 10, content="a"), _msg("s2", recipient=sent, at=T0 - 5, content="b"),
            _msg("old", recipient=sent, at=T0 - 100_000), _msg("free", recipient=sent, at=T0, counted=False),
            _msg("b1", recipient=black, at=T0 - 1)]))
        seen: list[AdmissionFacts] = []

        def decide(facts: AdmissionFacts) -> tuple[list[NewMessage], str]:
            seen.append(facts)
            return [_msg("new", recipient=quiet, at=T0 + 1)], "decided"

        query = AdmissionQuery("10690001", tuple(numbers), tuple(numbers), T0 - 86_400)
        assert r(store.messages.admit(query, decide)) == "decided"
        (facts,) = seen
        assert facts.blacklisted == frozenset({black})
        assert sorted((s.recipient, s.created_at, s.content_hash) for s in facts.history) == [
            (sent, T0 - 10, "a"), (sent, T0 - 5, "b")]
        assert r(store.messages.get("new")).recipient == quiet


class TestOutbox:
    def test_report_queued_once_replays_many(self, store: Store) -> None:
        """One report and one uplink per ref id; replays are new rows each time."""
        assert r(store.outbox.queue(PushKind.REPORT, "m1", "http://r/1", "{}", T0)) is not None
        assert r(store.outbox.queue(PushKind.REPORT, "m1", "http://r/1", "{}", T0)) is None
        assert r(store.outbox.queue(PushKind.UPLINK, "m1", "http://r/u", "{}", T0)) is not None
        a = r(store.outbox.queue_replay("m1", "http://r/2", "{}", T0))
        assert r(store.outbox.pending_replay("m1")) is True
        b = r(store.outbox.queue_replay("m1", "http://r/2", "{}", T0))
        assert a != b and r(store.outbox.pending_count()) == 4
        assert r(store.outbox.report_copy("m1")).url == "http://r/1"

    def test_due_ack_fail_dead_revive(self, store: Store) -> None:
        """The life of a push: due in order, acked (message reported), retried later, dead, revived."""
        r(store.messages.insert([_msg("m1")]))
        ids = [r(store.outbox.queue(PushKind.REPORT, f"m{i}", "http://r", "{}", T0 + i)) for i in (1, 2, 3)]
        due = r(store.outbox.due(T0 + 5, 10, exclude=[ids[2]]))
        assert [d.id for d in due] == ids[:2]
        first, second = due
        r(store.outbox.mark_pushed([first], T0 + 6))
        assert r(store.messages.get("m1")).reported is True
        r(store.outbox.mark_failed(second, T0 + 60, "HTTP 500"))
        assert [d.id for d in r(store.outbox.due(T0 + 7, 10))] == [ids[2]]
        assert r(store.outbox.next_due_at()) == T0 + 3
        r(store.outbox.mark_dead(second, "gave up"))
        (dead,) = r(store.outbox.dead())
        assert dead.id == second.id and dead.last_error == "gave up" and dead.attempts == 2
        counts = {(c.kind, c.state): c.count for c in r(store.outbox.counts())}
        assert counts == {("report", "acked"): 1, ("report", "dead"): 1, ("report", "pending"): 1}
        open_counts = {(c.kind, c.state): c.count for c in r(store.outbox.open_counts())}
        assert open_counts == {("report", "dead"): 1, ("report", "pending"): 1}     # acked rows: never read
        states = {c.state: c.count for c in r(store.outbox.states_of(ids))}
        assert states == {PushState.ACKED: 1, PushState.DEAD: 1, PushState.PENDING: 1}
        assert r(store.outbox.revive(second.id, T0 + 8)) is True
        assert r(store.outbox.revive(second.id, T0 + 8)) is False
        assert second.id in [d.id for d in r(store.outbox.due(T0 + 8, 10))]


    def test_a_batch_of_acknowledged_pushes(self, store: Store) -> None:
        """A pump's acknowledgements in one call: every row acked, every reported message marked,
        an uplink's ref id (an MO id) not taken for a message; an empty batch writes nothing."""
        r(store.messages.insert([_msg("m1"), _msg("m2"), _msg("m3")]))
        for mid in ("m1", "m2", "m3"):
            r(store.outbox.queue(PushKind.REPORT, mid, "http://r", "{}", T0))
        r(store.outbox.queue(PushKind.UPLINK, "m3", "http://r/u", "{}", T0))
        due = r(store.outbox.due(T0 + 1, 10))
        batch = [d for d in due if d.ref_id != "m2"]
        assert len(batch) == 3
        r(store.outbox.mark_pushed(batch, T0 + 2))
        r(store.outbox.mark_pushed([], T0 + 3))
        assert [d.ref_id for d in r(store.outbox.due(T0 + 4, 10))] == ["m2"]
        assert [r(store.messages.get(m)).reported for m in ("m1", "m2", "m3")] == [True, False, True]
        states = {(c.kind, c.state): c.count for c in r(store.outbox.counts())}
        assert states == {("report", "acked"): 2, ("report", "pending"): 1, ("uplink", "acked"): 1}


class TestMoAndBlacklist:
    def test_parts_replace_and_claim_once(self, store: Store) -> None:
        """A redelivered part replaces its seq; deleting claims the set exactly once."""
        for seq, text in ((2, "b"), (1, "a"), (2, "B")):
            r(store.mo.add_part("k", MoPart(seq, 3, text, T0 + seq, "cmcc", "+86138", "1069")))
        assert [(p.seq, p.text) for p in r(store.mo.parts("k"))] == [(1, "a"), (2, "B")]
        assert r(store.mo.pending_part_count()) == 2
        assert r(store.mo.stale_keys(T0 + 1.5)) == ["k"] and r(store.mo.stale_keys(T0)) == []
        assert r(store.mo.delete_parts("k")) == 2 and r(store.mo.delete_parts("k")) == 0

    def test_mo_records_and_counts(self, store: Store) -> None:
        r(store.mo.insert(NewMo("mo1", "cmcc", "+86138", "1069", None, None, "hi", T0, False, False, None)))
        r(store.mo.insert(NewMo("mo2", "cmcc", "+86138", "1069", "1069", "a", "T", T0 + 1, True, True, "m1")))
        counts = r(store.mo.counts())
        assert (counts.total, counts.unknown_channel, counts.unsubscribe, counts.incomplete) == (2, 1, 1, 1)
        assert [m.id for m in r(store.mo.recent())] == ["mo2", "mo1"]

    def test_blacklist(self, store: Store) -> None:
        """Listed once per channel and number; lookups per channel; removal."""
        assert r(store.blacklist.add("1069", "+8613800000001", T0, "mo1")) is True
        assert r(store.blacklist.add("1069", "+8613800000001", T0, "mo2")) is False
        r(store.blacklist.add("1069", "+8613800000002", T0 + 1, None))
        r(store.blacklist.add("1070", "+8613800000003", T0 + 2, None))
        assert r(store.blacklist.listed("1069", ["+8613800000001", "+8613800000003"])) == {"+8613800000001"}
        assert r(store.blacklist.get("1069", "+8613800000001")).mo_id == "mo1"
        assert [e.number for e in r(store.blacklist.entries("1069"))] == ["+8613800000002", "+8613800000001"]
        assert len(r(store.blacklist.entries(None))) == 3
        assert r(store.blacklist.remove("1069", "+8613800000001")) is True
        assert r(store.blacklist.remove("1069", "+8613800000001")) is False


class TestRetention:
    def test_prune_removes_only_old_finished_records(self, store: Store) -> None:
        """Old final messages (with segments), old receipts, old acked pushes and old MO go; the rest stays."""
        r(store.messages.insert([_msg("old", at=T0 - 1000, segments=2), _msg("oldq", at=T0 - 1000),
                                 _msg("new", at=T0)]))
        r(store.messages.finalise_message("old", "DELIVRD", "DELIVRD", 1, T0 - 900))
        r(store.receipts.insert_raw("cmcc", "1", "{}", T0 - 1000, None, "unmatched"))
        r(store.receipts.insert_raw("cmcc", "2", "{}", T0, None, "unmatched"))
        acked = r(store.outbox.queue(PushKind.REPORT, "old", "http://r", "{}", T0 - 1000))
        r(store.outbox.queue(PushKind.REPORT, "oldq", "http://r", "{}", T0 - 1000))
        (item,) = [i for i in r(store.outbox.due(T0, 10)) if i.id == acked]
        r(store.outbox.mark_pushed([item], T0 - 999))
        r(store.mo.insert(NewMo("mo1", "cmcc", "+86138", "1069", None, None, "hi", T0 - 1000, False, False, None)))
        got = r(store.messages.prune(T0 - 500, 100))
        assert (got.messages, got.segments) == (1, 2)
        assert r(store.messages.get("old")) is None and r(store.messages.get("oldq")) is not None
        assert r(store.receipts.prune(T0 - 500, 100)).receipts == 1
        assert r(store.outbox.prune(T0 - 500, 100)).pushes == 1 and r(store.outbox.pending_count()) == 1
        assert r(store.mo.prune(T0 - 500, 100)).mo == 1
        assert r(store.messages.prune(T0 - 500, 100)).total == 0


def test_concurrent_starts_migrate_once(pg_server) -> None:  # noqa: ANN001
    """Several instances starting at once on an empty database: one migrates, all start."""
    from bridge.config import StoreConfig

    url = pg_server.new_database()
    errors: list[BaseException] = []

    def start() -> None:
        try:
            result_of(open_store(StoreConfig(url=url), inline=True).close())
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    with psycopg.connect(url) as conn:
        names = [row[0] for row in conn.execute("SELECT name FROM smpp_bridge_migrations ORDER BY name")]
    assert names == [m.name for m in MIGRATIONS]
