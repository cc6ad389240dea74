"""deliver_sm from the carriers: receipts go to the matcher, the rest is MO.

The link hands over a protocol-neutral :class:`~bridge.models.InboundMessage`. The
deliver_sm is acknowledged only after what it caused is committed; if that fails the
SMSC gets an error status and redelivers.
"""

from __future__ import annotations

from typing import Protocol

import structlog
from twisted.internet.defer import Deferred

from bridge.matching import ReceiptMatcher
from bridge.models import InboundMessage
from bridge.receipts import is_receipt
from bridge.store import Store

__all__ = ["InboundHandler", "MoSink"]

log = structlog.get_logger("inbound")

ESME_ROK = 0


class MoSink(Protocol):
    def on_mo(self, carrier: str, message: InboundMessage) -> Deferred[bool]: ...


class InboundHandler:
    """The ``on_deliver`` callback of every carrier link."""

    def __init__(self, store: Store, matcher: ReceiptMatcher, mo: MoSink) -> None:
        self._store = store
        self._matcher = matcher
        self._mo = mo
        self.mo_count = 0

    @property
    def receipts(self) -> dict[str, int]:
        return self._matcher.counts

    def on_deliver(self, carrier: str, bind_id: str, message: InboundMessage) -> Deferred[int]:
        if is_receipt(message):
            d: Deferred[object] = self._matcher.on_receipt(carrier, message)
        else:
            self.mo_count += 1
            d = self._mo.on_mo(carrier, message)
        d.addCallback(lambda _: self._store.durable())

        return d.addCallback(lambda _: ESME_ROK)
