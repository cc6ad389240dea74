"""deliver_sm from the carriers: receipts are matched to segments, the rest is MO.

Every receipt is appended to the raw receipt log as received, matched or not, so an
operator can replay it later (``smpp-bridge replay receipts``). The deliver_sm is
acknowledged only after that write is committed; if the commit fails the SMSC gets an
error status and redelivers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import structlog
from twisted.internet.defer import Deferred

from bridge.dispatcher import Dispatcher
from bridge.finaliser import Finaliser
from bridge.latency import LATENCY
from bridge.receipts import (
    Receipt,
    ReceiptParseError,
    StatusMap,
    is_receipt,
    parse_receipt,
    receipt_from_json,
    receipt_to_json,
)
from bridge.smpp.codec import Pdu
from bridge.store import Store
from carriers.profiles import CarrierProfile

__all__ = ["InboundHandler", "ReceiptOutcome"]

log = structlog.get_logger("inbound")

ESME_ROK = 0


class MoSink(Protocol):
    def on_mo(self, carrier: str, pdu: Pdu) -> None: ...


class ReceiptOutcome:
    APPLIED = "applied"            # finalised a segment
    INTERMEDIATE = "intermediate"  # ENROUTE/ACCEPTD: logged, not final
    DUPLICATE = "duplicate"        # segment already final: nothing changes
    UNMATCHED = "unmatched"        # no segment (yet) has this id
    UNPARSEABLE = "unparseable"


class InboundHandler:
    """The ``on_deliver`` callback of every carrier link."""

    def __init__(self, store: Store, finaliser: Finaliser, dispatcher: Dispatcher, status_map: StatusMap,
                 profiles: Mapping[str, CarrierProfile], mo: MoSink, *, now: Callable[[], float] = time.time,
                 on_change: Callable[[], None] = lambda: None) -> None:
        self._store = store
        self._finaliser = finaliser
        self._dispatcher = dispatcher
        self._map = status_map
        self._profiles = profiles
        self._mo = mo
        self._now = now
        self._on_change = on_change
        self.receipts: dict[str, int] = {}
        self.mo_count = 0
        dispatcher.apply_early_receipt = self.apply_early

    def on_deliver(self, carrier: str, bind_id: str, pdu: Pdu) -> Deferred[int]:
        if is_receipt(pdu.fields):
            self.on_receipt(carrier, pdu.fields)
        else:
            self.mo_count += 1
            self._mo.on_mo(carrier, pdu)
        self._on_change()
        return self._store.durable().addCallback(lambda _: ESME_ROK)

    def on_receipt(self, carrier: str, fields: Mapping[str, Any]) -> str:
        try:
            receipt = parse_receipt(fields)
        except ReceiptParseError as exc:
            raw = {"error": str(exc), "short_message": _hex(fields.get("short_message")),
                   "message_payload": _hex(fields.get("message_payload"))}
            self._store.insert_raw_receipt(carrier, "", json.dumps(raw), self._now(), None,
                                           ReceiptOutcome.UNPARSEABLE)
            self._count(ReceiptOutcome.UNPARSEABLE)
            log.warning("receipt.unparseable", carrier=carrier, reason=str(exc))
            return ReceiptOutcome.UNPARSEABLE
        return self.apply(carrier, receipt)

    def apply(self, carrier: str, receipt: Receipt, raw_id: int | None = None) -> str:
        """Match and apply one receipt; with ``raw_id`` the raw log row already exists (replay)."""
        profile = self._profiles[carrier]
        cid = receipt.canonical_id(profile.receipt_id_dialect)
        mapped = self._map.map(receipt)
        now = self._now()
        match = self._store.find_segment(carrier, cid)
        segment_id = match.segment_id if match else None
        if match is None:
            outcome = ReceiptOutcome.UNMATCHED
            self._dispatcher.remember_early_receipt(carrier, cid)
        elif not mapped.final:
            outcome = ReceiptOutcome.INTERMEDIATE
        elif match.state == "final":
            outcome = ReceiptOutcome.DUPLICATE
        else:
            self._finaliser.segment_final(match.segment_id, mapped.status, mapped.org_code, total=match.total)
            LATENCY.receipt(match.segment_id, now)
            outcome = ReceiptOutcome.APPLIED
        if raw_id is None:
            self._store.insert_raw_receipt(carrier, cid, receipt_to_json(receipt), now, segment_id, outcome)
        elif segment_id is not None:
            self._store.mark_receipt_matched(raw_id, segment_id, outcome)
        self._count(outcome)
        return outcome

    def apply_early(self, carrier: str, canonical_id: str, segment_id: int) -> None:
        """The submit_sm_resp for receipts that came first has just been stored."""
        for raw_id, text in self._store.unmatched_receipts(carrier, canonical_id):
            receipt = receipt_from_json(text)
            mapped = self._map.map(receipt)
            outcome = ReceiptOutcome.INTERMEDIATE
            if mapped.final:
                self._finaliser.segment_final(segment_id, mapped.status, mapped.org_code)
                outcome = ReceiptOutcome.APPLIED
            self._store.mark_receipt_matched(raw_id, segment_id, outcome)
            self._count("early_" + outcome)

    def _count(self, outcome: str) -> None:
        self.receipts[outcome] = self.receipts.get(outcome, 0) + 1


def _hex(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    return "" if value is None else str(value)
