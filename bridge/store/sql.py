"""Every SQL statement of the bridge, shared by the SQLite and PostgreSQL backends.

Each concern is a small class over an :class:`~bridge.store.executor.Executor`; each
method builds one op (a function of a transaction) and hands it to the executor, which
runs it in the open group-commit transaction (SQLite) or in the next batch on the
database thread (PostgreSQL). Rows become frozen records here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from twisted.internet.defer import Deferred

from bridge.models import MessageRecord, NewMessage, NewMo, OutboxItem, SegmentRecord
from bridge.store.cluster import SqlCluster
from bridge.store.executor import Executor, Tx
from bridge.store.records import (
    AdmissionFacts,
    AdmissionQuery,
    BlacklistEntry,
    CarrierRoom,
    DeadPush,
    EarlyReceipt,
    ExportRow,
    FinalChoice,
    FinalisedMessage,
    MessageReceipt,
    MoCounts,
    MoPart,
    MoRecord,
    PruneCounts,
    PushRecord,
    PushState,
    RawReceipt,
    ReceiptApplied,
    ReceiptArrival,
    ReceiptOutcome,
    RecentSend,
    ReportCopy,
    SegmentDetail,
    SegmentFinal,
    SegmentMatch,
    SegmentStatus,
    StateCount,
    SubmitAccepted,
    UnmatchedReceipt,
)

__all__ = ["SqlBlacklist", "SqlMessages", "SqlMo", "SqlOutbox", "SqlReceipts", "SqlStore"]

_SEGMENT_COLUMNS = (
    "id, message_id, carrier, seq, total, source_addr, destination_addr, "
    "short_message, data_coding, esm_class, ref, sar, possible_duplicate"
)
_MESSAGE_FIELDS = (
    "id, app_id, channel, recipient, carrier, klass, state, status, org_code, total, "
    "status_callback, extend, created_at, final_at, "
)
# A message is reported once its status report is acknowledged: read from the outbox row
# (on the outbox_once index, whose WHERE the repeated kind test matches) rather than kept
# in messages.reported, which cost an UPDATE per message. The column stays, unwritten.
_MESSAGE_COLUMNS = _MESSAGE_FIELDS + (
    "EXISTS (SELECT 1 FROM outbox WHERE kind IN ('report', 'uplink') AND kind = 'report'"
    " AND ref_id = messages.id AND state = 'acked')"
)
# Made final just now: its report, queued in the same transaction, cannot be acknowledged yet.
_FINALISED_COLUMNS = _MESSAGE_FIELDS + "0"
_IN_LIMIT = 500          # parameters per IN (...) list
RECIPIENT_LOCKS = 0x52435054     # advisory lock namespace of per-recipient admission: "RCPT"
T = TypeVar("T")
ReportBuilder = Callable[[MessageRecord], str]
ChoiceReport = Callable[[MessageRecord, FinalChoice], str]           # a report's payload
FinalDecider = Callable[[Sequence[SegmentStatus]], FinalChoice | None]  # None: not every segment final


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _chunks(items: Sequence[Any], size: int = _IN_LIMIT) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _message(r: Sequence[Any]) -> MessageRecord:
    return MessageRecord(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11],
                         r[12], r[13], bool(r[14]))


def _segment(r: Sequence[Any]) -> SegmentRecord:
    return SegmentRecord(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bytes(r[7]), r[8], r[9], r[10],
                         bool(r[11]), bool(r[12]))


def _insert_messages(tx: Tx, messages: Sequence[NewMessage]) -> None:
    msg_rows = [(m.id, m.app_id, m.channel, m.recipient, m.carrier, str(m.klass), m.text, m.content_hash,
                 m.status_callback, m.extend, m.created_at, str(m.state), m.status, m.org_code,
                 m.release_at, max(1, len(m.segments)), m.created_at if m.status else None,
                 int(m.counted)) for m in messages]
    seg_rows = [(m.id, m.carrier, s.seq, s.total, m.channel, m.recipient, s.short_message,
                 s.data_coding, s.esm_class, s.ref, int(s.sar), str(m.state))
                for m in messages if m.state in ("held", "queued") for s in m.segments]
    tx.many("INSERT INTO messages (id, app_id, channel, recipient, carrier, klass, text, content_hash,"
            " status_callback, extend, created_at, state, status, org_code, release_at, total,"
            " final_at, counted) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", msg_rows)
    if seg_rows:
        tx.many("INSERT INTO segments (message_id, carrier, seq, total, source_addr, destination_addr,"
                " short_message, data_coding, esm_class, ref, sar, state)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", seg_rows)


def _recent_sends(tx: Tx, recipients: Sequence[str], since: float) -> list[RecentSend]:
    out: list[RecentSend] = []
    for chunk in _chunks(recipients):
        out.extend(RecentSend(*r) for r in tx.rows(
            "SELECT recipient, created_at, content_hash FROM messages WHERE counted = 1 AND"
            f" recipient IN ({_marks(len(chunk))}) AND created_at > ?", (*chunk, since)))
    return out


def _admission_facts(tx: Tx, query: AdmissionQuery) -> AdmissionFacts:
    """The blacklist entries and counted recent sends of a request's recipients."""
    numbers, counted = list(query.numbers), list(query.counted)
    if numbers and counted and len(numbers) <= _IN_LIMIT and len(counted) <= _IN_LIMIT:
        # The usual request: both reads in one statement (a blacklist row has no created_at).
        rows = tx.rows(
            f"SELECT number, NULL, NULL FROM blacklist WHERE channel = ? AND number IN ({_marks(len(numbers))})"
            " UNION ALL SELECT recipient, created_at, content_hash FROM messages WHERE counted = 1"
            f" AND recipient IN ({_marks(len(counted))}) AND created_at > ?",
            (query.channel, *numbers, *counted, query.since))
        blacklisted = {r[0] for r in rows if r[1] is None}
        history = [RecentSend(*r) for r in rows if r[1] is not None and r[0] not in blacklisted]
        return AdmissionFacts(frozenset(blacklisted), tuple(history))
    found: set[str] = set()
    for chunk in _chunks(numbers):
        found.update(r[0] for r in tx.rows(
            f"SELECT number FROM blacklist WHERE channel = ? AND number IN ({_marks(len(chunk))})",
            (query.channel, *chunk)))
    allowed = [n for n in counted if n not in found]
    return AdmissionFacts(frozenset(found), tuple(_recent_sends(tx, allowed, query.since) if allowed else ()))


def _parts_ahead_of_predecessor(tx: Tx, taken: Sequence[SegmentRecord], node: str | None) -> set[int]:
    """Ids of taken parts whose previous part is still queued, dispatched by another
    member, or itself one of these (the wait carries down the message)."""
    in_take = {(s.message_id, s.seq): s.id for s in taken}
    early: set[int] = set()
    for s in sorted(taken, key=lambda s: (s.message_id, s.seq)):
        if s.seq == 1:
            continue
        before = in_take.get((s.message_id, s.seq - 1))
        if before is not None:
            if before in early:
                early.add(s.id)
            continue
        rows = tx.rows("SELECT state, dispatched_by FROM segments WHERE message_id = ? AND seq = ?",
                       (s.message_id, s.seq - 1))
        if rows and (rows[0][0] == "queued" or (rows[0][0] == "dispatched" and rows[0][1] != node)):
            early.add(s.id)
    return early


def _take(tx: Tx, carrier: str, limit: int, node: str | None) -> list[SegmentRecord]:
    """Up to ``limit`` oldest queued segments of ``carrier``, marked dispatched by ``node``."""
    if limit <= 0:
        return []
    rows = tx.rows(
        "UPDATE segments SET state = 'dispatched', dispatched_by = ?, attempts = attempts + 1 WHERE id IN"
        " (SELECT id FROM segments WHERE carrier = ? AND state = 'queued' ORDER BY id LIMIT ?"
        f"{tx.skip_locked}) RETURNING {_SEGMENT_COLUMNS}", (node, carrier, limit))
    taken = sorted((_segment(r) for r in rows), key=lambda s: s.id)
    early = _parts_ahead_of_predecessor(tx, taken, node)
    if early:
        tx.many("UPDATE segments SET state = 'queued', dispatched_by = NULL, attempts = attempts - 1"
                " WHERE id = ?", [(i,) for i in early])
        taken = [s for s in taken if s.id not in early]
    return taken


def _segment_statuses(tx: Tx, message_id: str) -> list[SegmentStatus]:
    return [SegmentStatus(*r) for r in tx.rows(
        "SELECT seq, state, status, org_code FROM segments WHERE message_id = ? ORDER BY seq", (message_id,))]


def _segment_final(tx: Tx, message_id: str, seq: int, total: int, status: str, org_code: str) -> SegmentFinal:
    """A segment just made final, with its message's segments (a one-part message needs no read)."""
    if total == 1:
        return SegmentFinal(message_id, (SegmentStatus(seq, "final", status, org_code),))
    return SegmentFinal(message_id, tuple(_segment_statuses(tx, message_id)))


def _final_by_id(tx: Tx, segment_id: int, status: str, org_code: str, now: float,
                 submit_status: int | None = None, possible_duplicate: bool = False) -> SegmentFinal | None:
    """Mark a segment final, its message row locked first (PostgreSQL); None if it already was."""
    if tx.for_update:
        tx.rows("SELECT 1 FROM messages WHERE id = (SELECT message_id FROM segments WHERE id = ?)"
                f"{tx.for_update}", (segment_id,))
    rows = tx.rows("UPDATE segments SET state = 'final', status = ?, org_code = ?, done_at = ?,"
                   " submit_status = COALESCE(?, submit_status),"
                   " possible_duplicate = CASE WHEN ? = 1 THEN 1 ELSE possible_duplicate END"
                   " WHERE id = ? AND state != 'final' RETURNING message_id, seq, total",
                   (status, org_code, now, submit_status, int(possible_duplicate), segment_id))
    if not rows:
        return None
    message_id, seq, total = rows[0]
    return _segment_final(tx, message_id, seq, total, status, org_code)


def _find_segment(tx: Tx, carrier: str, canonical_id: str) -> SegmentMatch | None:
    rows = tx.rows("SELECT id, message_id, state, total FROM segments WHERE carrier = ?"
                   " AND carrier_msg_id = ? ORDER BY id DESC LIMIT 1", (carrier, canonical_id))
    return SegmentMatch(*rows[0]) if rows else None


def _finalise(tx: Tx, message_id: str, choice: FinalChoice, now: float, report: ChoiceReport | None,
              claimer: str | None) -> FinalisedMessage | None:
    """Make a message final with ``choice`` and queue its report; None if it already was final."""
    rows = tx.rows("UPDATE messages SET state = 'final', status = ?, org_code = ?, final_seq = ?,"
                   f" final_at = ? WHERE id = ? AND state != 'final' RETURNING {_FINALISED_COLUMNS}",
                   (choice.status, choice.org_code, choice.seq, now, message_id))
    if not rows:
        return None
    msg = _message(rows[0])
    item = None
    if report is not None and msg.status_callback:
        payload = report(msg, choice)
        # Claimed by this member at once: its pusher is offered the row without a fetch.
        queued = tx.rows("INSERT INTO outbox (kind, ref_id, url, payload, state, created_at, next_attempt_at,"
                         " claimed_by) VALUES ('report', ?, ?, ?, 'pending', ?, ?, ?)"
                         " ON CONFLICT DO NOTHING RETURNING id",
                         (message_id, msg.status_callback, payload, now, now, claimer))
        if queued:
            item = OutboxItem(queued[0][0], "report", message_id, msg.status_callback, payload, 0, now, now)
    return FinalisedMessage(msg, item)


def _time_range(column: str, since: float | None, until: float | None) -> tuple[list[str], list[Any]]:
    """WHERE clauses and parameters for ``since <= column < until`` (either side optional)."""
    where, params = ["1=1"], []
    if since is not None:
        where.append(f"{column} >= ?")
        params.append(since)
    if until is not None:
        where.append(f"{column} < ?")
        params.append(until)
    return where, params


EARLY_RECEIPT_WINDOW_S = 60.0


class _UnmatchedReceipts:
    """When this process last stored a receipt it could not match (an early one, usually).

    A submit result looks for receipts that came before it only when one was stored within
    :data:`EARLY_RECEIPT_WINDOW_S` of it: otherwise that read found nothing on nearly every
    batch (0.3 statements a message). Only where this process is the database's one writer
    (SQLite); an older unmatched receipt, or one stored before this process started, is
    still matched, by the sweep every second.
    """

    __slots__ = ("last_at",)

    def __init__(self) -> None:
        self.last_at = float("-inf")

    def stored(self, at: float) -> None:
        self.last_at = max(self.last_at, at)

    def none_since(self, at: float) -> bool:
        return self.last_at < at - EARLY_RECEIPT_WINDOW_S


class SqlMessages:
    def __init__(self, ex: Executor, node: str = "", unmatched: _UnmatchedReceipts | None = None) -> None:
        self._ex = ex
        self._node = node or None
        self._claimer = node if node and ex.shared else None   # pushes this member queues are its own
        self._unmatched = unmatched   # None: always read for receipts that came first

    def insert(self, messages: Sequence[NewMessage]) -> Deferred[None]:
        return self._ex.write(lambda tx: _insert_messages(tx, messages))

    def recent_sends(self, recipients: Sequence[str], since: float) -> Deferred[list[RecentSend]]:
        wanted = list(dict.fromkeys(recipients))
        return self._ex.read(lambda tx: _recent_sends(tx, wanted, since))

    def admit(self, query: AdmissionQuery,
              decide: Callable[[AdmissionFacts], tuple[Sequence[NewMessage], T]]) -> Deferred[T]:
        """Read the rules' facts, decide, and insert, in one transaction serialised per recipient.

        Whichever member takes a request, a second request to the same number waits for
        this one to commit and then counts its messages: the limits hold exactly across the
        cluster, and requests to other numbers never wait. ``decide`` is a pure function of
        the facts (it may run again if the transaction is retried, and on the database
        thread); it returns the messages to insert and what the caller gets back.
        """
        def op(tx: Tx) -> T:
            tx.lock_keys(RECIPIENT_LOCKS, query.numbers)
            messages, result = decide(_admission_facts(tx, query))
            _insert_messages(tx, messages)
            return result
        return self._ex.write(op)

    def take_queued(self, carrier: str, limit: int) -> Deferred[list[SegmentRecord]]:
        """Oldest queued segments of ``carrier``, marked dispatched by this member.

        On PostgreSQL rows another member is taking are skipped (SKIP LOCKED), so a long
        message can be cut between two members' takes: a part whose predecessor is neither
        in this take nor already sent or dispatched here goes back, to wait for it.
        """
        node = self._node
        return self._ex.write(lambda tx: _take(tx, carrier, limit, node))

    def take_queued_for(self, rooms: Sequence[CarrierRoom]) -> Deferred[list[SegmentRecord]]:
        """The dispatcher's feed: every carrier with room in one store call (one op, one
        Deferred, one durable wait for them all, instead of one each)."""
        node = self._node
        return self._ex.write(lambda tx: [s for room in rooms for s in _take(tx, room.carrier, room.limit, node)])

    def requeue(self, segment_ids: Iterable[int], possible_duplicate: bool) -> Deferred[None]:
        rows = [(int(possible_duplicate), sid) for sid in segment_ids]

        def op(tx: Tx) -> None:
            if rows:
                tx.many("UPDATE segments SET state = 'queued',"
                        " possible_duplicate = CASE WHEN ? = 1 THEN 1 ELSE possible_duplicate END"
                        " WHERE id = ? AND state = 'dispatched'", rows)
        return self._ex.write(op)

    def requeue_all_dispatched(self) -> Deferred[int]:
        """After a crash: nothing in flight survived, so resend it, flagged as a possible duplicate."""
        return self._ex.write(lambda tx: tx.run(
            "UPDATE segments SET state = 'queued', possible_duplicate = 1 WHERE state = 'dispatched'"))

    def record_submitted(self, accepted: Sequence[SubmitAccepted]) -> Deferred[list[EarlyReceipt]]:
        """Store accepted submits; returns the receipts that arrived before them, to apply now."""
        rows = [(a.canonical_id, a.raw_id, a.at, int(a.possible_duplicate), a.segment_id) for a in accepted]
        by_carrier: dict[str, dict[str, int]] = {}
        for a in accepted:
            by_carrier.setdefault(a.carrier, {})[a.canonical_id] = a.segment_id

        unmatched = self._unmatched
        earliest = min((a.at for a in accepted), default=0.0)

        def op(tx: Tx) -> list[EarlyReceipt]:
            tx.many("UPDATE segments SET state = 'submitted', carrier_msg_id = ?, raw_msg_id = ?,"
                    " submit_status = 0, submitted_at = ?,"
                    " possible_duplicate = CASE WHEN ? = 1 THEN 1 ELSE possible_duplicate END"
                    " WHERE id = ? AND state IN ('dispatched', 'queued')", rows)
            early: list[EarlyReceipt] = []
            if unmatched is not None and unmatched.none_since(earliest):
                return early
            for carrier, ids in by_carrier.items():
                keys = list(ids)
                for chunk in _chunks(keys):
                    for rid, cid, text in tx.rows(
                            "SELECT id, canonical_id, receipt FROM receipts_raw WHERE segment_id IS NULL"
                            f" AND carrier = ? AND canonical_id IN ({_marks(len(chunk))}) ORDER BY id",
                            (carrier, *chunk)):
                        early.append(EarlyReceipt(rid, ids[cid], carrier, text))
            return early
        return self._ex.write(op)

    def record_segment_final(self, segment_id: int, status: str, org_code: str, now: float,
                             submit_status: int | None = None,
                             possible_duplicate: bool = False) -> Deferred[SegmentFinal | None]:
        """Mark a segment final; with its message's segments, or None if it already was final.

        The message row is locked first (PostgreSQL), so two segments of one message made
        final at once, by any instances, cannot both miss that the other is final.
        """
        return self._ex.write(lambda tx: _final_by_id(tx, segment_id, status, org_code, now, submit_status,
                                                      possible_duplicate))

    def apply_receipt(self, arrival: ReceiptArrival, decide: FinalDecider,
                      report: ChoiceReport | None = None) -> Deferred[ReceiptApplied]:
        """Apply one receipt in one transaction: match, finalise, queue the report, log it raw.

        The newest segment with the receipt's carrier id is the match (ids can repeat after
        a carrier restarts its counter). A final receipt makes it final in the same
        statement that finds it; if that made every segment of its message final,
        ``decide`` picks the message's status and the message is finalised with its report
        (``report`` builds the payload). A final receipt for a segment already final
        finalises its message if a crash came between the two. The raw receipt is logged
        with its outcome last, as before: the deliver_sm is acknowledged once all is durable.
        """
        a = arrival

        def op(tx: Tx) -> ReceiptApplied:
            outcome, segment_id, finalised = ReceiptOutcome.UNMATCHED, None, None
            final: SegmentFinal | None = None
            if a.final:
                if tx.for_update:
                    tx.rows("SELECT 1 FROM messages WHERE id = (SELECT message_id FROM segments WHERE carrier = ?"
                            f" AND carrier_msg_id = ? ORDER BY id DESC LIMIT 1){tx.for_update}",
                            (a.carrier, a.canonical_id))
                rows = tx.rows("UPDATE segments SET state = 'final', status = ?, org_code = ?, done_at = ?"
                               " WHERE id = (SELECT id FROM segments WHERE carrier = ? AND carrier_msg_id = ?"
                               " ORDER BY id DESC LIMIT 1) AND state != 'final'"
                               " RETURNING id, message_id, seq, total",
                               (a.status, a.org_code, a.received_at, a.carrier, a.canonical_id))
                if rows:
                    segment_id, message_id, seq, total = rows[0]
                    outcome = ReceiptOutcome.APPLIED
                    final = _segment_final(tx, message_id, seq, total, a.status, a.org_code)
            if final is None:
                match = _find_segment(tx, a.carrier, a.canonical_id)
                if match is not None:
                    segment_id = match.segment_id
                    if not a.final:
                        outcome = ReceiptOutcome.INTERMEDIATE
                    else:
                        if match.state != "final":
                            # PostgreSQL reads each statement at its own snapshot: the submit
                            # result that gave the segment this id committed after the UPDATE
                            # looked (another member's), so make it final by its id now.
                            final = _final_by_id(tx, match.segment_id, a.status, a.org_code, a.received_at)
                        if final is not None:
                            outcome = ReceiptOutcome.APPLIED
                        else:
                            outcome = ReceiptOutcome.DUPLICATE
                            # A redelivery after a crash may find the segment final but not its message.
                            final = SegmentFinal(match.message_id,
                                                 tuple(_segment_statuses(tx, match.message_id)))
            if final is not None:
                choice = decide(final.segments)
                if choice is not None:
                    finalised = _finalise(tx, final.message_id, choice, a.received_at, report, self._claimer)
            tx.run("INSERT INTO receipts_raw (carrier, received_at, canonical_id, receipt, segment_id, outcome)"
                   " VALUES (?,?,?,?,?,?)",
                   (a.carrier, a.received_at, a.canonical_id, a.receipt_json, segment_id, str(outcome)))
            if segment_id is None and self._unmatched is not None:
                self._unmatched.stored(a.received_at)
            return ReceiptApplied(outcome, segment_id, finalised)
        return self._ex.write(op)

    def segments_of(self, message_id: str) -> Deferred[list[SegmentStatus]]:
        return self._ex.read(lambda tx: _segment_statuses(tx, message_id))

    def finalise_message(self, message_id: str, status: str, org_code: str, final_seq: int,
                         now: float, report: ReportBuilder | None = None) -> Deferred[FinalisedMessage | None]:
        """Make a message final and queue its report in one transaction; None if it already was final.

        ``report`` turns the final record into the report's JSON payload; it is pushed to
        the message's statusCallback (none queued without one). The queued row comes back
        so the pusher can take it from memory once it is committed.
        """
        choice = FinalChoice(status, org_code, final_seq)
        built = None if report is None else (lambda msg, _choice: report(msg))
        return self._ex.write(lambda tx: _finalise(tx, message_id, choice, now, built, self._claimer))

    def unfinished_with_final_segments(self, limit: int = 1000) -> Deferred[list[str]]:
        """Messages whose every segment is final but which are not (a crash between the two)."""
        return self._ex.read(lambda tx: [r[0] for r in tx.rows(
            "SELECT m.id FROM messages m WHERE m.state = 'queued' AND EXISTS (SELECT 1 FROM segments s"
            " WHERE s.message_id = m.id) AND NOT EXISTS (SELECT 1 FROM segments s WHERE s.message_id = m.id"
            " AND s.state != 'final') LIMIT ?", (limit,))])

    def find_segment(self, carrier: str, canonical_id: str) -> Deferred[SegmentMatch | None]:
        return self._ex.read(lambda tx: _find_segment(tx, carrier, canonical_id))

    def overdue_segments(self, submitted_before: float, limit: int = 1000) -> Deferred[list[int]]:
        return self._ex.read(lambda tx: [r[0] for r in tx.rows(
            "SELECT id FROM segments WHERE state = 'submitted' AND submitted_at < ?"
            " ORDER BY submitted_at LIMIT ?", (submitted_before, limit))])

    def reschedule_held(self, release_at: float) -> Deferred[int]:
        """Held messages wait for the window of the rules in force now, not at acceptance."""
        return self._ex.write(lambda tx: tx.run(
            "UPDATE messages SET release_at = ? WHERE state = 'held' AND release_at != ?",
            (release_at, release_at)))

    def release_held(self, now: float) -> Deferred[list[str]]:
        def op(tx: Tx) -> list[str]:
            ids = [r[0] for r in tx.rows(
                "UPDATE messages SET state = 'queued' WHERE id IN (SELECT id FROM messages"
                f" WHERE state = 'held' AND release_at <= ? LIMIT 5000{tx.skip_locked}) RETURNING id", (now,))]
            if ids:
                tx.many("UPDATE segments SET state = 'queued' WHERE message_id = ? AND state = 'held'",
                        [(i,) for i in ids])
            return ids
        return self._ex.write(op)

    def get(self, message_id: str) -> Deferred[MessageRecord | None]:
        def op(tx: Tx) -> MessageRecord | None:
            rows = tx.rows(f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = ?", (message_id,))
            return _message(rows[0]) if rows else None
        return self._ex.read(op)

    def for_number(self, channels: Sequence[str], number: str, limit: int = 20) -> Deferred[list[MessageRecord]]:
        """Newest messages to ``number`` on these channels (the channel+recipient index)."""
        chans = list(channels)[:_IN_LIMIT]

        def op(tx: Tx) -> list[MessageRecord]:
            if not chans:
                return []
            return [_message(r) for r in tx.rows(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE channel IN ({_marks(len(chans))})"
                " AND recipient = ? ORDER BY created_at DESC LIMIT ?", (*chans, number, limit))]
        return self._ex.read(op)

    def segment_details(self, message_id: str) -> Deferred[list[SegmentDetail]]:
        return self._ex.read(lambda tx: [SegmentDetail(*r[:9], bool(r[9])) for r in tx.rows(
            "SELECT seq, state, status, org_code, carrier_msg_id, raw_msg_id, submit_status,"
            " submitted_at, done_at, possible_duplicate FROM segments WHERE message_id = ? ORDER BY seq",
            (message_id,))])

    def recent_downlinks(self, channel: str, recipient: str, since: float) -> Deferred[list[str]]:
        return self._ex.read(lambda tx: [r[0] for r in tx.rows(
            "SELECT id FROM messages WHERE channel = ? AND recipient = ? AND created_at > ?"
            " ORDER BY created_at DESC LIMIT 2", (channel, recipient, since))])

    def state_counts(self) -> Deferred[list[StateCount]]:
        """Held messages (their partial index); the other states are the segments' backlog."""
        return self._ex.read(lambda tx: [StateCount("held", int(tx.rows(
            "SELECT COUNT(*) FROM messages WHERE state = 'held'")[0][0]))])

    def segment_state_counts(self) -> Deferred[list[StateCount]]:
        """Segments not yet final, by state: each count runs on its partial index, never a scan."""
        return self._ex.read(lambda tx: [StateCount(state, int(tx.rows(
            "SELECT COUNT(*) FROM segments WHERE state = ?", (state,))[0][0]))
            for state in ("held", "queued", "dispatched", "submitted")])

    def export_rows(self, since: float | None, until: float | None) -> Deferred[list[ExportRow]]:
        where, params = _time_range("m.created_at", since, until)
        return self._ex.read(lambda tx: [ExportRow(*r) for r in tx.rows(
            "SELECT m.id, m.recipient, m.carrier, m.channel, m.total,"
            " (SELECT MIN(submitted_at) FROM segments s WHERE s.message_id = m.id),"
            " m.created_at, m.state, m.status, m.org_code,"
            " COALESCE((SELECT state FROM outbox o WHERE o.kind = 'report' AND o.ref_id = m.id), 'none')"
            f" FROM messages m WHERE {' AND '.join(where)} ORDER BY m.created_at, m.id", params)])

    def report_candidates(self, *, since: float | None, until: float | None, statuses: Sequence[str],
                          channel: str | None, recipient: str | None,
                          ids: Sequence[str]) -> Deferred[list[MessageRecord]]:
        where, params = _time_range("created_at", since, until)
        where.insert(0, "state = 'final'")
        if statuses:
            where.append(f"status IN ({_marks(len(statuses))})")
            params.extend(statuses)
        if channel:
            where.append("channel = ?")
            params.append(channel)
        if recipient:
            where.append("recipient = ?")
            params.append(recipient)
        if ids:
            where.append(f"id IN ({_marks(len(ids))})")
            params.extend(ids)
        return self._ex.read(lambda tx: [_message(r) for r in tx.rows(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE {' AND '.join(where)} ORDER BY created_at",
            params)])

    def prune(self, before: float, batch: int) -> Deferred[PruneCounts]:
        """Delete up to ``batch`` final, reported-or-unreported messages older than ``before``."""
        def op(tx: Tx) -> PruneCounts:
            ids = [r[0] for r in tx.rows(
                "SELECT id FROM messages WHERE created_at < ? AND state = 'final' ORDER BY created_at LIMIT ?",
                (before, batch))]
            if not ids:
                return PruneCounts()
            marks = _marks(len(ids))
            segments = tx.run(f"DELETE FROM segments WHERE message_id IN ({marks})", ids)
            messages = tx.run(f"DELETE FROM messages WHERE id IN ({marks})", ids)
            return PruneCounts(messages=messages, segments=segments)
        return self._ex.write(op)


class SqlReceipts:
    def __init__(self, ex: Executor, unmatched: _UnmatchedReceipts | None = None) -> None:
        self._ex = ex
        self._unmatched = unmatched

    def insert_raw(self, carrier: str, canonical_id: str, receipt_json: str, now: float,
                   segment_id: int | None, outcome: str) -> Deferred[int]:
        def op(tx: Tx) -> int:
            if segment_id is None and self._unmatched is not None:
                self._unmatched.stored(now)
            return int(tx.rows(
                "INSERT INTO receipts_raw (carrier, received_at, canonical_id, receipt, segment_id, outcome)"
                " VALUES (?,?,?,?,?,?) RETURNING id",
                (carrier, now, canonical_id, receipt_json, segment_id, outcome))[0][0])
        return self._ex.write(op)

    def unmatched_for(self, carrier: str, canonical_id: str) -> Deferred[list[UnmatchedReceipt]]:
        return self._ex.read(lambda tx: [UnmatchedReceipt(*r) for r in tx.rows(
            "SELECT id, receipt FROM receipts_raw WHERE carrier = ? AND canonical_id = ?"
            " AND segment_id IS NULL ORDER BY id", (carrier, canonical_id))])

    def matchable(self, limit: int) -> Deferred[list[EarlyReceipt]]:
        """Unmatched receipts whose segment has since stored its carrier id (any node's).

        Runs every second: ``+r.id`` keeps SQLite on the partial index of unmatched rows
        (ordering by the rowid itself made it scan every receipt ever kept).
        """
        return self._ex.read(lambda tx: [EarlyReceipt(*r) for r in tx.rows(
            "SELECT r.id, (SELECT MAX(s.id) FROM segments s WHERE s.carrier = r.carrier"
            " AND s.carrier_msg_id = r.canonical_id), r.carrier, r.receipt FROM receipts_raw r"
            " WHERE r.segment_id IS NULL AND r.canonical_id != '' AND EXISTS (SELECT 1 FROM segments s"
            " WHERE s.carrier = r.carrier AND s.carrier_msg_id = r.canonical_id) ORDER BY +r.id LIMIT ?",
            (limit,))])

    def mark_matched(self, receipt_id: int, segment_id: int, outcome: str) -> Deferred[None]:
        def op(tx: Tx) -> None:
            tx.run("UPDATE receipts_raw SET segment_id = ?, outcome = ? WHERE id = ?",
                   (segment_id, outcome, receipt_id))
        return self._ex.write(op)

    def raw(self, *, since: float | None, until: float | None, unmatched_only: bool,
            carrier: str | None, limit: int = 1_000_000) -> Deferred[list[RawReceipt]]:
        where, params = _time_range("received_at", since, until)
        if unmatched_only:
            where.append("segment_id IS NULL")
        if carrier:
            where.append("carrier = ?")
            params.append(carrier)
        return self._ex.read(lambda tx: [RawReceipt(*r) for r in tx.rows(
            f"SELECT id, carrier, receipt, received_at FROM receipts_raw WHERE {' AND '.join(where)}"
            " ORDER BY id LIMIT ?", (*params, limit))])

    def of_message(self, message_id: str, since: float) -> Deferred[list[MessageReceipt]]:
        """Receipts matched to the message's segments, received since ``since`` (its creation)."""
        return self._ex.read(lambda tx: [MessageReceipt(*r) for r in tx.rows(
            "SELECT s.seq, r.received_at, r.outcome, r.receipt FROM receipts_raw r"
            " JOIN segments s ON s.id = r.segment_id WHERE r.received_at >= ? AND s.message_id = ?"
            " ORDER BY r.received_at LIMIT 100", (since, message_id))])

    def unmatched_count(self) -> Deferred[int]:
        return self._ex.read(lambda tx: int(tx.rows(
            "SELECT COUNT(*) FROM receipts_raw WHERE segment_id IS NULL")[0][0]))

    def prune(self, before: float, batch: int) -> Deferred[PruneCounts]:
        return self._ex.write(lambda tx: PruneCounts(receipts=tx.run(
            "DELETE FROM receipts_raw WHERE id IN (SELECT id FROM receipts_raw WHERE received_at < ?"
            " ORDER BY received_at LIMIT ?)", (before, batch))))


_OUTBOX_ITEM = "id, kind, ref_id, url, payload, attempts, created_at, next_attempt_at"


class SqlOutbox:
    def __init__(self, ex: Executor, node: str = "", failover_s: float = 10.0) -> None:
        self._ex = ex
        self._node = node if node and ex.shared else None   # one process alone needs no claims
        self._failover_s = failover_s

    def queue(self, kind: str, ref_id: str, url: str, payload: str, now: float) -> Deferred[int | None]:
        """Queue a push; a report or uplink is queued at most once per ref_id."""
        def op(tx: Tx) -> int | None:
            rows = tx.rows("INSERT INTO outbox (kind, ref_id, url, payload, state, created_at, next_attempt_at)"
                           " VALUES (?,?,?,?, 'pending', ?, ?) ON CONFLICT DO NOTHING RETURNING id",
                           (str(kind), ref_id, url, payload, now, now))
            return int(rows[0][0]) if rows else None
        return self._ex.write(op)

    def queue_replay(self, message_id: str, url: str, payload: str, now: float) -> Deferred[int]:
        """An operator's re-push of a report: a new outbox row, same payload."""
        return self._ex.write(lambda tx: int(tx.rows(
            "INSERT INTO outbox (kind, ref_id, url, payload, state, created_at, next_attempt_at)"
            " VALUES ('replay', ?, ?, ?, 'pending', ?, ?) RETURNING id",
            (message_id, url, payload, now, now))[0][0]))

    def due(self, now: float, limit: int, exclude: Iterable[int] = ()) -> Deferred[list[OutboxItem]]:
        """Pending pushes due by ``now``, oldest first; claimed by this member if it is one.

        A claimed row is pushed only by its member while that member is alive: rows another
        member is claiming are skipped (SKIP LOCKED), rows of a dead member are taken over.
        On a store no other process shares (SQLite) this stays a plain read.
        """
        excluded = set(exclude)
        if self._node is None:
            return self._ex.read(lambda tx: [OutboxItem(*r) for r in tx.rows(
                f"SELECT {_OUTBOX_ITEM} FROM outbox WHERE state = 'pending' AND next_attempt_at <= ?"
                " ORDER BY next_attempt_at, id LIMIT ?", (now, limit + len(excluded)))
                if r[0] not in excluded][:limit])
        node, live_after = self._node, now - self._failover_s

        def op(tx: Tx) -> list[OutboxItem]:
            rows = tx.rows(
                f"SELECT {_OUTBOX_ITEM}, claimed_by FROM outbox WHERE state = 'pending' AND next_attempt_at <= ?"
                " AND (claimed_by IS NULL OR claimed_by = ? OR claimed_by NOT IN"
                " (SELECT name FROM nodes WHERE heartbeat_at > ?)) ORDER BY next_attempt_at, id LIMIT ?"
                f"{tx.skip_locked}", (now, node, live_after, limit + len(excluded)))
            tx.many("UPDATE outbox SET claimed_by = ? WHERE id = ?",
                    [(node, r[0]) for r in rows if r[-1] != node])
            return [OutboxItem(*r[:-1]) for r in rows if r[0] not in excluded][:limit]
        return self._ex.write(op)

    def pending_replay(self, message_id: str) -> Deferred[bool]:
        return self._ex.read(lambda tx: bool(tx.rows(
            "SELECT 1 FROM outbox WHERE kind = 'replay' AND ref_id = ? AND state = 'pending'", (message_id,))))

    def states_of(self, outbox_ids: Sequence[int]) -> Deferred[list[StateCount]]:
        ids = list(outbox_ids)

        def op(tx: Tx) -> list[StateCount]:
            counts: dict[str, int] = {}
            for chunk in _chunks(ids):
                for state, n in tx.rows(f"SELECT state, COUNT(*) FROM outbox WHERE id IN ({_marks(len(chunk))})"
                                        " GROUP BY state", chunk):
                    counts[state] = counts.get(state, 0) + n
            return [StateCount(s, n) for s, n in counts.items()]
        return self._ex.read(op)

    def pending_count(self) -> Deferred[int]:
        return self._ex.read(lambda tx: int(tx.rows("SELECT COUNT(*) FROM outbox WHERE state = 'pending'")[0][0]))

    def next_due_at(self) -> Deferred[float | None]:
        return self._ex.read(lambda tx: tx.rows(
            "SELECT MIN(next_attempt_at) FROM outbox WHERE state = 'pending'")[0][0])

    def mark_pushed(self, items: Sequence[OutboxItem], now: float) -> Deferred[None]:
        """Acknowledged pushes, in one batch (a pump's worth); a report's message reads as reported."""
        acked = [(now, item.id) for item in items]

        def op(tx: Tx) -> None:
            if acked:
                tx.many("UPDATE outbox SET state = 'acked', acked_at = ?, attempts = attempts + 1 WHERE id = ?",
                        acked)
        return self._ex.write(op)

    def mark_failed(self, item: OutboxItem, next_at: float, error: str) -> Deferred[None]:
        def op(tx: Tx) -> None:
            tx.run("UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ? WHERE id = ?",
                   (next_at, error[:500], item.id))
        return self._ex.write(op)

    def mark_dead(self, item: OutboxItem, error: str) -> Deferred[None]:
        def op(tx: Tx) -> None:
            tx.run("UPDATE outbox SET state = 'dead', attempts = attempts + 1, last_error = ? WHERE id = ?",
                   (error[:500], item.id))
        return self._ex.write(op)

    def defer(self, item: OutboxItem, next_at: float) -> Deferred[None]:
        """Move a pending row's next attempt without counting an attempt (a parked row)."""
        def op(tx: Tx) -> None:
            tx.run("UPDATE outbox SET next_attempt_at = ? WHERE id = ? AND state = 'pending'", (next_at, item.id))
        return self._ex.write(op)

    def revive(self, outbox_id: int, now: float) -> Deferred[bool]:
        """An operator's replay of a dead letter: pending again, due now, a fresh max-age window."""
        return self._ex.write(lambda tx: tx.run(
            "UPDATE outbox SET state = 'pending', next_attempt_at = ?, created_at = ?, last_error = NULL"
            " WHERE id = ? AND state = 'dead'", (now, now, outbox_id)) > 0)

    def pushes_of(self, ref_id: str) -> Deferred[list[PushRecord]]:
        return self._ex.read(lambda tx: [PushRecord(*r) for r in tx.rows(
            "SELECT id, kind, state, attempts, created_at, acked_at, last_error FROM outbox"
            " WHERE kind IN ('report', 'uplink') AND ref_id = ?", (ref_id,))])

    def counts(self) -> Deferred[list[StateCount]]:
        """Every row by kind and state: a scan of the whole outbox (tools and tests, not gauges)."""
        return self._ex.read(lambda tx: [StateCount(s, n, k) for k, s, n in tx.rows(
            "SELECT kind, state, COUNT(*) FROM outbox GROUP BY kind, state")])

    def open_counts(self) -> Deferred[list[StateCount]]:
        """Pending and dead rows by kind, each on its partial index: acknowledged rows (which
        pile up until retention removes them) are never read."""
        def op(tx: Tx) -> list[StateCount]:
            return [StateCount(state, n, kind) for state in (PushState.PENDING, PushState.DEAD)
                    for kind, n in tx.rows(f"SELECT kind, COUNT(*) FROM outbox WHERE state = '{state}'"
                                           " GROUP BY kind")]
        return self._ex.read(op)

    def dead(self, limit: int = 100) -> Deferred[list[DeadPush]]:
        return self._ex.read(lambda tx: [DeadPush(*r) for r in tx.rows(
            "SELECT id, kind, ref_id, url, attempts, created_at, last_error FROM outbox"
            " WHERE state = 'dead' ORDER BY id DESC LIMIT ?", (limit,))])

    def report_copy(self, message_id: str) -> Deferred[ReportCopy | None]:
        def op(tx: Tx) -> ReportCopy | None:
            rows = tx.rows("SELECT url, payload FROM outbox WHERE kind = 'report' AND ref_id = ?", (message_id,))
            return ReportCopy(*rows[0]) if rows else None
        return self._ex.read(op)

    def prune(self, before: float, batch: int) -> Deferred[PruneCounts]:
        """Acknowledged pushes older than ``before``; pending and dead ones stay."""
        return self._ex.write(lambda tx: PruneCounts(pushes=tx.run(
            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE state = ? AND created_at < ?"
            " ORDER BY created_at LIMIT ?)", (str(PushState.ACKED), before, batch))))


class SqlMo:
    def __init__(self, ex: Executor) -> None:
        self._ex = ex

    def insert(self, mo: NewMo) -> Deferred[None]:
        def op(tx: Tx) -> None:
            tx.run("INSERT INTO mo (id, carrier, source, destination, channel, app_id, body, created_at,"
                   " incomplete, unsubscribe, downlink_id) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                   (mo.id, mo.carrier, mo.source, mo.destination, mo.channel, mo.app_id, mo.body,
                    mo.created_at, int(mo.incomplete), int(mo.unsubscribe), mo.downlink_id))
        return self._ex.write(op)

    def add_part(self, key: str, part: MoPart) -> Deferred[None]:
        """A redelivery of the same seq replaces the stored part."""
        def op(tx: Tx) -> None:
            tx.run("INSERT INTO mo_parts (key, seq, total, text, received_at, carrier, source, destination)"
                   " VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (key, seq) DO UPDATE SET total = excluded.total,"
                   " text = excluded.text, received_at = excluded.received_at",
                   (key, part.seq, part.total, part.text, part.received_at, part.carrier, part.source,
                    part.destination))
        return self._ex.write(op)

    def parts(self, key: str) -> Deferred[list[MoPart]]:
        return self._ex.read(lambda tx: [MoPart(*r) for r in tx.rows(
            "SELECT seq, total, text, received_at, carrier, source, destination FROM mo_parts"
            " WHERE key = ? ORDER BY seq", (key,))])

    def delete_parts(self, key: str) -> Deferred[int]:
        """Delete (claim) the parts of ``key``; 0 if another handler already took them."""
        return self._ex.write(lambda tx: tx.run("DELETE FROM mo_parts WHERE key = ?", (key,)))

    def stale_keys(self, received_before: float) -> Deferred[list[str]]:
        return self._ex.read(lambda tx: [r[0] for r in tx.rows(
            "SELECT key FROM mo_parts GROUP BY key HAVING MIN(received_at) < ?", (received_before,))])

    def pending_part_count(self) -> Deferred[int]:
        return self._ex.read(lambda tx: int(tx.rows("SELECT COUNT(*) FROM mo_parts")[0][0]))

    def counts(self) -> Deferred[MoCounts]:
        def op(tx: Tx) -> MoCounts:
            total, unknown, unsub, incomplete = tx.rows(
                "SELECT COUNT(*), SUM(CASE WHEN channel IS NULL THEN 1 ELSE 0 END), SUM(unsubscribe),"
                " SUM(incomplete) FROM mo")[0]
            return MoCounts(int(total or 0), int(unknown or 0), int(unsub or 0), int(incomplete or 0))
        return self._ex.read(op)

    def recent(self, limit: int = 100) -> Deferred[list[MoRecord]]:
        return self._ex.read(lambda tx: [MoRecord(*r[:8], bool(r[8]), bool(r[9]), r[10]) for r in tx.rows(
            "SELECT id, carrier, source, destination, channel, app_id, body, created_at, incomplete,"
            " unsubscribe, downlink_id FROM mo ORDER BY created_at DESC, id DESC LIMIT ?", (limit,))])

    def prune(self, before: float, batch: int) -> Deferred[PruneCounts]:
        return self._ex.write(lambda tx: PruneCounts(mo=tx.run(
            "DELETE FROM mo WHERE id IN (SELECT id FROM mo WHERE created_at < ? ORDER BY created_at LIMIT ?)",
            (before, batch))))


class SqlBlacklist:
    def __init__(self, ex: Executor) -> None:
        self._ex = ex

    def listed(self, channel: str, numbers: Sequence[str]) -> Deferred[set[str]]:
        wanted = list(dict.fromkeys(numbers))

        def op(tx: Tx) -> set[str]:
            out: set[str] = set()
            for chunk in _chunks(wanted):
                out.update(r[0] for r in tx.rows(
                    f"SELECT number FROM blacklist WHERE channel = ? AND number IN ({_marks(len(chunk))})",
                    (channel, *chunk)))
            return out
        return self._ex.read(op)

    def add(self, channel: str, number: str, now: float, mo_id: str | None) -> Deferred[bool]:
        return self._ex.write(lambda tx: bool(tx.rows(
            "INSERT INTO blacklist (channel, number, created_at, mo_id) VALUES (?,?,?,?)"
            " ON CONFLICT DO NOTHING RETURNING number", (channel, number, now, mo_id))))

    def remove(self, channel: str, number: str) -> Deferred[bool]:
        return self._ex.write(lambda tx: tx.run(
            "DELETE FROM blacklist WHERE channel = ? AND number = ?", (channel, number)) > 0)

    def get(self, channel: str, number: str) -> Deferred[BlacklistEntry | None]:
        def op(tx: Tx) -> BlacklistEntry | None:
            rows = tx.rows("SELECT channel, number, created_at, mo_id FROM blacklist"
                           " WHERE channel = ? AND number = ?", (channel, number))
            return BlacklistEntry(*rows[0]) if rows else None
        return self._ex.read(op)

    def entries(self, channel: str | None, limit: int = 1000) -> Deferred[list[BlacklistEntry]]:
        if channel:
            sql, params = ("SELECT channel, number, created_at, mo_id FROM blacklist WHERE channel = ?"
                           " ORDER BY created_at DESC LIMIT ?", (channel, limit))
        else:
            sql, params = ("SELECT channel, number, created_at, mo_id FROM blacklist"
                           " ORDER BY created_at DESC LIMIT ?", (limit,))
        return self._ex.read(lambda tx: [BlacklistEntry(*r) for r in tx.rows(sql, params)])


class SqlStore:
    """The five concerns, and cluster membership, over one executor: what both backends hand out."""

    def __init__(self, executor: Executor, node: str = "", failover_s: float = 10.0,
                 cluster_executor: Executor | None = None) -> None:
        """``cluster_executor``: where membership runs, if not on ``executor`` (its own connection)."""
        self._ex = executor
        self._cluster_ex = cluster_executor
        self.node = node
        # Other members store receipts too: a shared database is always read.
        unmatched = None if executor.shared else _UnmatchedReceipts()
        self.messages = SqlMessages(executor, node, unmatched)
        self.receipts = SqlReceipts(executor, unmatched)
        self.outbox = SqlOutbox(executor, node, failover_s)
        self.mo = SqlMo(executor)
        self.blacklist = SqlBlacklist(executor)
        self.cluster = SqlCluster(cluster_executor or executor)

    @property
    def description(self) -> str:
        return self._ex.description

    @property
    def commits(self) -> int:
        return self._ex.commits

    @property
    def commit_seconds(self) -> float:
        return self._ex.commit_seconds

    @property
    def statements(self) -> int:
        return self._ex.statements.n

    def durable(self) -> Deferred[None]:
        return self._ex.durable()

    def before_commit(self, fn: Callable[[], object]) -> bool:
        return self._ex.before_commit(fn)

    def flush(self) -> Deferred[None]:
        return self._ex.flush()

    def close(self) -> Deferred[None]:
        if self._cluster_ex is None:
            return self._ex.close()
        cluster = self._cluster_ex
        return self._ex.close().addBoth(lambda result: cluster.close().addCallback(lambda _: result))
