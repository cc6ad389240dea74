"""Heartbeats: this member's row in the store, the live view, and who leads.

Each beat is one store transaction (see :class:`~bridge.store.interface.ClusterStore`):
it writes the heartbeat, renews this member's bind-slot leases and takes the free slots
the planner picks. The resulting view goes to ``on_view`` (the slot keeper). The
leader, which runs the once-per-cluster jobs, is the lowest live name: every member
computes the same answer from the same table, with no lock to hold or lose.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog
from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from bridge.cluster.slots import SlotKey, plan_claims
from bridge.cluster.timing import ClusterTiming
from bridge.store.interface import ClusterStore
from bridge.store.records import ClusterView, Heartbeat

__all__ = ["Membership"]

log = structlog.get_logger("cluster")


class Membership(Service):
    """Joins the cluster, beats every ``timing.heartbeat_s``, leaves on stop."""

    def __init__(self, store: ClusterStore, node: str, timing: ClusterTiming, totals: Mapping[str, int], *,
                 clock: Any, api: Callable[[], str] = lambda: "", binds: Callable[[], str] = lambda: "[]",
                 on_view: Callable[[ClusterView], None] = lambda view: None) -> None:
        self.name = node
        self._store = store
        self._timing = timing
        self._totals = dict(totals)
        self._clock = clock
        self._api = api
        self._binds = binds
        self._on_view = on_view
        self._started_at = clock.seconds()
        self._loop: LoopingCall | None = None
        self._claiming = True
        self.view: ClusterView | None = None
        self.beats = 0

    @property
    def node(self) -> str:
        return self.name

    @property
    def is_leader(self) -> bool:
        return self.view is not None and self.view.leader() == self.name

    def live_after(self) -> float:
        """Heartbeats older than this are from dead members."""
        return self._clock.seconds() - self._timing.failover_s

    def _heartbeat(self) -> Heartbeat:
        now = self._clock.seconds()
        return Heartbeat(node=self.name, now=now, started_at=self._started_at,
                         lease_until=now + self._timing.lease_s, live_after=now - self._timing.failover_s,
                         share_after=now - self._timing.lease_s, api=self._api(), binds=self._binds())

    def join(self) -> Deferred[None]:
        """Register before anything is dispatched under this name."""
        return self._store.join(self._heartbeat(), self._totals)

    def startService(self) -> None:  # noqa: N802 (Twisted API)
        super().startService()
        self._loop = LoopingCall(self.beat)
        self._loop.clock = self._clock
        self._loop.start(self._timing.heartbeat_s, now=True).addErrback(self._loop_died)

    def beat(self) -> Deferred[ClusterView | None]:
        """One heartbeat; a failed one is logged (the slot keeper fences unrenewed leases)."""
        d = maybeDeferred(self._store.beat, self._heartbeat(), self._planner)
        return d.addCallbacks(self._seen, self._beat_failed)

    def _planner(self, view: ClusterView, node: str) -> Sequence[SlotKey]:
        """Claims for the carriers this member serves (a carrier disabled here is not ours)."""
        if not self._claiming:
            return ()
        ours = tuple(s for s in view.slots if s.carrier in self._totals)
        return plan_claims(dataclasses.replace(view, slots=ours), node)

    def _seen(self, view: ClusterView) -> ClusterView:
        was_leader = self.is_leader
        self.view = view
        self.beats += 1
        if self.is_leader != was_leader:
            log.info("cluster.leader", node=self.name, leader=view.leader(), live=len(view.live))
        self._on_view(view)
        return view

    def _beat_failed(self, failure: Failure) -> None:
        log.warning("cluster.heartbeat_failed", node=self.name, error=str(failure.value))

    def _loop_died(self, failure: Failure) -> None:
        log.error("cluster.heartbeat_loop_died", node=self.name, error=str(failure.value))

    def stop_claiming(self) -> None:
        """Shutting down: keep renewing what is held (binds still closing), take nothing new."""
        self._claiming = False

    def stopService(self) -> Deferred[None]:  # noqa: N802 (Twisted API)
        """Stop beating and leave: every slot released at once, for the others to take."""
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        return self._store.leave(self.name)
