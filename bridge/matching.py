"""Receipt matching: the one stage that turns receipts into final segment statuses.

Every receipt is appended to the raw receipt log, matched or not. A receipt can beat
its submit_sm_resp (or, in a cluster, arrive on another instance's bind): it is then
stored unmatched, and applied when the submit result is stored (the store hands those
back from ``record_submitted``) or by the periodic sweep, which catches whatever
another process stored in between.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence

import structlog
from twisted.internet.defer import Deferred

from bridge.finaliser import Finaliser
from bridge.latency import LATENCY
from bridge.models import InboundMessage
from bridge.receipts import (
    Receipt,
    ReceiptParseError,
    StatusMap,
    parse_receipt,
    receipt_from_json,
    receipt_to_json,
)
from bridge.store import Store
from bridge.store.records import EarlyReceipt, ReceiptApplied, ReceiptArrival, ReceiptOutcome
from carriers.profiles import CarrierProfile

__all__ = ["ReceiptMatcher", "ReceiptOutcome"]

log = structlog.get_logger("receipts")

SWEEP_BATCH = 500


class ReceiptMatcher:
    """Applies receipts to segments through the store; counts outcomes."""

    def __init__(self, store: Store, finaliser: Finaliser, status_map: StatusMap,
                 profiles: Mapping[str, CarrierProfile], *, now: Callable[[], float] = time.time) -> None:
        self._store = store
        self._finaliser = finaliser
        self._map = status_map
        self._profiles = profiles
        self._now = now
        self.counts: dict[str, int] = {}

    def on_receipt(self, carrier: str, message: InboundMessage) -> Deferred[str]:
        """Parse, match, apply and log one receipt deliver_sm."""
        try:
            receipt = parse_receipt(message)
        except ReceiptParseError as exc:
            raw = {"error": str(exc), "short_message": _hex(message.short_message),
                   "message_payload": _hex(message.message_payload)}
            self._count(ReceiptOutcome.UNPARSEABLE)
            log.warning("receipt.unparseable", carrier=carrier, reason=str(exc))
            d = self._store.receipts.insert_raw(carrier, "", json.dumps(raw), self._now(), None,
                                                ReceiptOutcome.UNPARSEABLE)
            return d.addCallback(lambda _: ReceiptOutcome.UNPARSEABLE)
        cid = receipt.canonical_id(self._profiles[carrier].receipt_id_dialect)
        mapped = self._map.map(receipt)
        arrival = ReceiptArrival(carrier, cid, mapped.final, mapped.status, mapped.org_code, self._now(),
                                 receipt_to_json(receipt))
        return self._finaliser.apply_receipt(arrival).addCallback(self._applied, arrival.received_at)

    def _applied(self, applied: ReceiptApplied, now: float) -> str:
        if applied.outcome is ReceiptOutcome.APPLIED and applied.segment_id is not None:
            LATENCY.receipt(applied.segment_id, now)
        self._count(applied.outcome)
        return applied.outcome

    def apply(self, carrier: str, receipt: Receipt, raw_id: int | None = None) -> Deferred[str]:
        """Match and apply one receipt; with ``raw_id`` the raw log row already exists (replay).

        A live receipt takes :meth:`on_receipt`'s single store call; this step-by-step path
        serves replays, whose raw row is marked rather than written.
        """
        return Deferred.fromCoroutine(self._apply(carrier, receipt, raw_id))

    async def _apply(self, carrier: str, receipt: Receipt, raw_id: int | None) -> str:
        cid = receipt.canonical_id(self._profiles[carrier].receipt_id_dialect)
        mapped = self._map.map(receipt)
        now = self._now()
        match = await self._store.messages.find_segment(carrier, cid)
        segment_id = match.segment_id if match else None
        if match is None:
            outcome = ReceiptOutcome.UNMATCHED
        elif not mapped.final:
            outcome = ReceiptOutcome.INTERMEDIATE
        elif match.state == "final":
            outcome = ReceiptOutcome.DUPLICATE
            # A redelivery after a crash may find the segment final but not its message.
            await self._finaliser.check_message(match.message_id)
        else:
            await self._finaliser.segment_final(match.segment_id, mapped.status, mapped.org_code,
                                                total=match.total)
            LATENCY.receipt(match.segment_id, now)
            outcome = ReceiptOutcome.APPLIED
        # The raw row goes last: the deliver_sm is acknowledged only once it is durable,
        # so a crash before it means the SMSC redelivers and nothing is half-applied.
        if raw_id is None:
            await self._store.receipts.insert_raw(carrier, cid, receipt_to_json(receipt), now, segment_id, outcome)
        elif segment_id is not None:
            await self._store.receipts.mark_matched(raw_id, segment_id, outcome)
        self._count(outcome)
        return outcome

    def apply_early(self, early: Sequence[EarlyReceipt]) -> Deferred[int]:
        """Receipts stored unmatched whose submit result is now stored: apply them."""
        return Deferred.fromCoroutine(self._apply_early(early))

    async def _apply_early(self, early: Sequence[EarlyReceipt]) -> int:
        for e in early:
            mapped = self._map.map(receipt_from_json(e.receipt_json))
            outcome = ReceiptOutcome.INTERMEDIATE
            if mapped.final:
                await self._finaliser.segment_final(e.segment_id, mapped.status, mapped.org_code)
                outcome = ReceiptOutcome.APPLIED
            await self._store.receipts.mark_matched(e.receipt_id, e.segment_id, outcome)
            self._count("early_" + outcome)
        return len(early)

    def sweep(self) -> Deferred[int]:
        """Apply unmatched receipts that any process has since become able to match."""
        return self._store.receipts.matchable(SWEEP_BATCH).addCallback(self.apply_early)

    def _count(self, outcome: str) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1


def _hex(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    return "" if value is None else str(value)
