"""Turns segment outcomes into one final status per message and queues its report.

A long message is one ``smsMsgId``: it is final when every segment is, ``DELIVRD`` only
when all segments are, otherwise the status of the first failing segment. The report is
queued in the same transaction as the final state, so a crash can neither lose it nor
queue it twice (the outbox keeps one report per message).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime

from bridge.models import MessageRecord
from bridge.store import Store

__all__ = ["Finaliser", "iso_time", "report_payload"]

DELIVERED = "DELIVRD"


def iso_time(ts: float) -> str:
    """UTC timestamps as the platform writes them: ``2026-11-25T04:29:57Z``."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def report_payload(msg: MessageRecord, status: str, org_code: str, org_desc: str, sequence: int,
                   update_time: float) -> str:
    return json.dumps({
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
    }, ensure_ascii=False, separators=(",", ":"))


class Finaliser:
    """Applies final segment statuses and finalises messages; counts what it did."""

    def __init__(self, store: Store, *, now: Callable[[], float] = time.time,
                 describe: Callable[[str], str] = lambda code: "") -> None:
        self._store = store
        self._now = now
        self._describe = describe
        self.finalised: dict[str, int] = {}
        self.reports_queued = 0

    def segment_final(self, segment_id: int, status: str, org_code: str,
                      submit_status: int | None = None, *, total: int | None = None,
                      possible_duplicate: bool = False) -> str | None:
        """Record a final segment; returns the message id if this made the message final.

        ``total`` (when the caller knows it) spares single-segment messages, most of the
        traffic, the look at their sibling segments.
        """
        now = self._now()
        message_id = self._store.record_segment_final(segment_id, status, org_code, now, submit_status,
                                                      possible_duplicate)
        if message_id is None:
            return None
        if total == 1:
            return message_id if self.message_final(message_id, status, org_code, 1, now) else None
        return message_id if self.check_message(message_id, now) else None

    def check_message(self, message_id: str, now: float | None = None) -> bool:
        now = self._now() if now is None else now
        segments = self._store.segments_of(message_id)
        if not segments or any(state != "final" for _seq, state, _s, _o in segments):
            return False
        deciding = next(((seq, st, oc) for seq, _state, st, oc in segments if st != DELIVERED), None)
        if deciding is None:
            seq, _state, status, org_code = segments[-1]
        else:
            seq, status, org_code = deciding
        return self.message_final(message_id, status or "UNDELIV", org_code or "", seq, now)

    def message_final(self, message_id: str, status: str, org_code: str, sequence: int,
                      now: float | None = None) -> bool:
        """Finalise a message (also used by pre-send rules) and queue its status report."""
        now = self._now() if now is None else now
        msg = self._store.finalise_message(message_id, status, org_code, sequence, now)
        if msg is None:
            return False
        self.finalised[status] = self.finalised.get(status, 0) + 1
        if msg.status_callback:
            payload = report_payload(msg, status, org_code, self._describe(org_code), sequence, now)
            if self._store.queue_push("report", message_id, msg.status_callback, payload, now) is not None:
                self.reports_queued += 1
        return True
