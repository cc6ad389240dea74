"""Opens a carrier bind for each slot this member holds, and closes it before it may not.

The rule the carriers impose: never more binds than configured, cluster-wide. So a
bind is open only while its slot's lease is ours: a slot won opens its bind; a slot
given back (another member is short) is closed gracefully first and released after;
a lease that was not renewed in time is closed at once, ``fence_s`` before it could
lapse, so a survivor taking it over never overlaps with us.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import structlog
from twisted.internet.defer import Deferred

from bridge.cluster.slots import SlotKey, plan_surplus
from bridge.cluster.timing import ClusterTiming
from bridge.smpp.types import StopReport
from bridge.store.records import ClusterView

__all__ = ["LeasedLink", "SlotKeeper"]

log = structlog.get_logger("cluster")


class LeasedLink(Protocol):
    def open_bind(self, n: int) -> None: ...
    def close_bind(self, n: int, drain_timeout_s: float, *, abort: bool = False) -> Deferred[StopReport | None]: ...


class SlotKeeper:
    """Keeps each link's open binds equal to the slots held, as heartbeats report them."""

    def __init__(self, node: str, links: Mapping[str, LeasedLink], timing: ClusterTiming, *, clock: Any,
                 release: Callable[[Sequence[SlotKey]], Deferred[None]],
                 requeue: Callable[[StopReport], object], drain_timeout_s: float = 5.0) -> None:
        self._node = node
        self._links = links
        self._timing = timing
        self._clock = clock
        self._release = release
        self._requeue = requeue
        self._drain_s = drain_timeout_s
        self._leases: dict[SlotKey, float] = {}     # open binds: slot -> lease_until
        self._closing: set[SlotKey] = set()
        self._fences: dict[SlotKey, Any] = {}
        self._stopping = False
        self.opened = 0
        self.fenced = 0

    @property
    def held(self) -> frozenset[SlotKey]:
        return frozenset(self._leases)

    def apply(self, view: ClusterView) -> None:
        """Open, keep, or close binds to match the slots ``view`` says we hold."""
        held = {(s.carrier, s.slot): s.lease_until for s in view.slots
                if s.carrier in self._links and s.held_by(self._node, view.now)}
        for key in [k for k in self._leases if k not in held]:
            log.warning("cluster.slot_lost", carrier=key[0], slot=key[1])
            self._close(key, abort=True, release=False)
        for key, until in held.items():
            if key in self._closing:
                continue
            if key not in self._leases:
                if self._stopping:
                    continue
                self._links[key[0]].open_bind(key[1])
                self.opened += 1
                log.info("cluster.slot_taken", carrier=key[0], slot=key[1])
            self._leases[key] = until
            self._arm_fence(key, until)
        if not self._stopping:
            for key in plan_surplus(view, self._node):
                if key in self._leases:
                    log.info("cluster.slot_handed_over", carrier=key[0], slot=key[1])
                    self._close(key, abort=False, release=True)

    def stop(self) -> None:
        """Open nothing more (the daemon closes the open binds itself, then leaves)."""
        self._stopping = True

    def closed(self) -> None:
        """Every bind is closed (the links stopped): nothing left to fence."""
        for call in self._fences.values():
            if call.active():
                call.cancel()
        self._fences.clear()
        self._leases.clear()

    def _arm_fence(self, key: SlotKey, until: float) -> None:
        call = self._fences.pop(key, None)
        if call is not None and call.active():
            call.cancel()
        delay = max(0.0, until - self._timing.fence_s - self._clock.seconds())
        self._fences[key] = self._clock.callLater(delay, self._fenced, key)

    def _fenced(self, key: SlotKey) -> None:
        self._fences.pop(key, None)
        if key in self._leases:
            self.fenced += 1
            log.warning("cluster.lease_not_renewed", carrier=key[0], slot=key[1])
            self._close(key, abort=True, release=False)

    def _close(self, key: SlotKey, *, abort: bool, release: bool) -> None:
        self._leases.pop(key, None)
        call = self._fences.pop(key, None)
        if call is not None and call.active():
            call.cancel()
        self._closing.add(key)
        d = self._links[key[0]].close_bind(key[1], self._drain_s, abort=abort)
        d.addCallback(lambda report: self._requeue(report) if report is not None else None)
        if release:
            d.addCallback(lambda _: self._release([key]))
        d.addErrback(lambda f: log.error("cluster.slot_close_failed", carrier=key[0], slot=key[1],
                                         error=str(f.value)))
        d.addBoth(lambda _: self._closing.discard(key))
