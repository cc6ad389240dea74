"""Turns segment outcomes into one final status per message and queues its report.

A long message is one ``smsMsgId``: it is final when every segment is, ``DELIVRD`` only
when all segments are, otherwise the status of the first failing segment. The report is
queued in the same transaction as the final state, so a crash can neither lose it nor
queue it twice (the outbox keeps one report per message); a crash between a last
segment's final state and its message's is repaired at start and by a repeated receipt.
The expiry policy lives here too: no receipt within the timeout is ``EXPIRED``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import lru_cache

import structlog
from twisted.internet.defer import Deferred

from bridge.jsonfast import dumps_flat
from bridge.models import MessageRecord, OutboxItem
from bridge.store import Store
from bridge.store.records import (
    FinalChoice,
    FinalisedMessage,
    ReceiptApplied,
    ReceiptArrival,
    SegmentStatus,
)

__all__ = ["Finaliser", "final_choice", "iso_time", "report_payload"]

log = structlog.get_logger("finaliser")

DELIVERED = "DELIVRD"
EXPIRED = "EXPIRED"
NO_RECEIPT = "SC:NORECEIPT"


def iso_time(ts: float) -> str:
    """UTC timestamps as the platform writes them: ``2026-11-25T04:29:57Z``."""
    return _iso_second(int(ts // 1))


@lru_cache(maxsize=8)   # thousands of reports share each second
def _iso_second(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def final_choice(segments: Sequence[SegmentStatus]) -> FinalChoice | None:
    """A message's status once every segment is final: DELIVRD only if all are, else the
    first failing segment's; None while a segment is not final."""
    if not segments or any(s.state != "final" for s in segments):
        return None
    deciding = next((s for s in segments if s.status != DELIVERED), segments[-1])
    return FinalChoice(deciding.status or "UNDELIV", deciding.org_code or "", deciding.seq)


def report_payload(msg: MessageRecord, status: str, org_code: str, org_desc: str, sequence: int,
                   update_time: float) -> str:
    return dumps_flat({
        "smsMsgId": msg.id,
        "from": msg.channel,
        "to": msg.recipient,
        "status": status,
        "orgCode": org_code,
        "orgDesc": org_desc,
        "total": msg.total,
        "sequence": sequence,
        "updateTime": iso_time(update_time),
        "extend": msg.extend,
    })


class Finaliser:
    """Applies final segment statuses and finalises messages; counts what it did."""

    def __init__(self, store: Store, *, now: Callable[[], float] = time.time,
                 describe: Callable[[str], str] = lambda code: "",
                 receipt_timeout_s: float = 259_200.0,
                 on_report: Callable[[OutboxItem], None] = lambda item: None) -> None:
        self._store = store
        self._on_report = on_report   # the pusher takes new reports from memory, not by polling
        self._now = now
        self._describe = describe
        self._receipt_timeout = receipt_timeout_s
        self.finalised: dict[str, int] = {}
        self.reports_queued = 0

    def segment_final(self, segment_id: int, status: str, org_code: str,
                      submit_status: int | None = None, *, total: int | None = None,
                      possible_duplicate: bool = False) -> Deferred[str | None]:
        """Record a final segment; fires with the message id if this made the message final.

        ``total`` (when the caller knows it) spares single-segment messages, most of the
        traffic, the look at their sibling segments.
        """
        return Deferred.fromCoroutine(self._segment_final(segment_id, status, org_code, submit_status,
                                                          total, possible_duplicate))

    async def _segment_final(self, segment_id: int, status: str, org_code: str, submit_status: int | None,
                             total: int | None, possible_duplicate: bool) -> str | None:
        now = self._now()
        final = await self._store.messages.record_segment_final(
            segment_id, status, org_code, now, submit_status, possible_duplicate)
        if final is None:
            return None
        done = await self._decide(final.message_id, final.segments, now)
        return final.message_id if done else None

    def check_message(self, message_id: str) -> Deferred[bool]:
        """Finalise a message whose segments are all final (repair after a crash between the two)."""
        return Deferred.fromCoroutine(self._check_message(message_id))

    async def _check_message(self, message_id: str) -> bool:
        segments = await self._store.messages.segments_of(message_id)
        return await self._decide(message_id, segments, self._now())

    async def _decide(self, message_id: str, segments: Sequence[SegmentStatus], now: float) -> bool:
        choice = final_choice(segments)
        if choice is None:
            return False
        return await self._message_final(message_id, choice.status, choice.org_code, choice.seq, now)

    def apply_receipt(self, arrival: ReceiptArrival) -> Deferred[ReceiptApplied]:
        """Apply a receipt in one store call; a message it made final is counted and its report offered."""
        def report(msg: MessageRecord, choice: FinalChoice) -> str:
            return report_payload(msg, choice.status, choice.org_code, self._describe(choice.org_code),
                                  choice.seq, arrival.received_at)

        return self._store.messages.apply_receipt(arrival, final_choice, report).addCallback(self._applied)

    def _applied(self, applied: ReceiptApplied) -> ReceiptApplied:
        done = applied.finalised
        if done is not None:
            self._count_final(done)
        return applied

    def _count_final(self, done: FinalisedMessage) -> None:
        status = done.message.status or ""
        self.finalised[status] = self.finalised.get(status, 0) + 1
        if done.report is not None:
            self.reports_queued += 1
            self._on_report(done.report)

    def message_final(self, message_id: str, status: str, org_code: str, sequence: int,
                      now: float | None = None) -> Deferred[bool]:
        """Finalise a message (also used by pre-send rules) and queue its status report."""
        return Deferred.fromCoroutine(self._message_final(message_id, status, org_code, sequence,
                                                          self._now() if now is None else now))

    async def _message_final(self, message_id: str, status: str, org_code: str, sequence: int,
                             now: float) -> bool:
        def report(msg: MessageRecord) -> str:
            return report_payload(msg, status, org_code, self._describe(org_code), sequence, now)

        done = await self._store.messages.finalise_message(message_id, status, org_code, sequence, now, report)
        if done is None:
            return False
        self._count_final(done)
        return True

    def repair(self) -> Deferred[int]:
        """At start: finalise messages left with every segment final by a crash in between."""
        return Deferred.fromCoroutine(self._repair())

    async def _repair(self) -> int:
        ids = await self._store.messages.unfinished_with_final_segments()
        for message_id in ids:
            await self._check_message(message_id)
        if ids:
            log.warning("finaliser.repaired", messages=len(ids))
        return len(ids)

    def expire_overdue(self) -> Deferred[int]:
        """No receipt within the receipt timeout: the platform records EXPIRED itself."""
        return Deferred.fromCoroutine(self._expire_overdue())

    async def _expire_overdue(self) -> int:
        cutoff = self._now() - self._receipt_timeout
        ids = await self._store.messages.overdue_segments(cutoff)
        for segment_id in ids:
            await self._segment_final(segment_id, EXPIRED, NO_RECEIPT, None, None, False)
        if ids:
            log.info("receipts.expired", segments=len(ids))
        return len(ids)
