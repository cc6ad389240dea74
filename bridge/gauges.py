"""Store-wide gauges (backlog, outbox), read in the background for ``/metrics``.

A scrape must not wait on the database (and on PostgreSQL it cannot read it
synchronously), so the counts are refreshed every few seconds and served from memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall

from bridge.store import Store
from bridge.store.records import PushKind, PushState

__all__ = ["StoreGauges"]

log = structlog.get_logger("gauges")

# Every kind is exposed in both open states (0 when empty), so dashboards never see a missing
# series. Acknowledged rows are not counted: they pile up until retention removes them.
_NO_PUSHES = {f"{k}:{s}": 0 for k in PushKind for s in (PushState.PENDING, PushState.DEAD)}


@dataclass
class StoreGauges:
    store: Store
    segments: dict[str, int] = field(default_factory=dict)
    pushes: dict[str, int] = field(default_factory=lambda: dict(_NO_PUSHES))
    messages: dict[str, int] = field(default_factory=dict)
    _loop: LoopingCall | None = None
    _busy: bool = False

    def start(self, clock: object, interval_s: float = 2.0) -> None:
        self._loop = LoopingCall(self.refresh)
        self._loop.clock = clock
        self._loop.start(interval_s, now=True)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def refresh(self) -> Deferred[None] | None:
        if self._busy:
            return None
        self._busy = True
        return Deferred.fromCoroutine(self._refresh())

    async def _refresh(self) -> None:
        try:
            self.segments = {c.state: c.count for c in await self.store.messages.segment_state_counts()}
            counts = {f"{c.kind}:{c.state}": c.count for c in await self.store.outbox.open_counts()}
            self.pushes = {**_NO_PUSHES, **counts}
            self.messages = {c.state: c.count for c in await self.store.messages.state_counts()}
        except Exception as exc:  # a failed read leaves the last figures; the next tick retries
            log.warning("gauges.refresh_failed", error=str(exc))
        finally:
            self._busy = False
