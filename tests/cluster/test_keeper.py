"""The slot keeper: a bind is open exactly while its slot's lease is ours."""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from bridge.cluster.binds import SlotKeeper
from bridge.cluster.timing import ClusterTiming
from bridge.smpp.types import StopReport
from bridge.store.records import ClusterView, SlotLease

TIMING = ClusterTiming(failover_s=2.0)     # lease 1.2 s, fence 0.3 s before it ends


class RecordingLink:
    """Opens and closes binds on request; a close finishes when the test says so."""

    def __init__(self) -> None:
        self.open: set[int] = set()
        self.closes: list[tuple[int, bool]] = []
        self.pending: list[Deferred[StopReport | None]] = []

    def open_bind(self, n: int) -> None:
        self.open.add(n)

    def close_bind(self, n: int, drain_timeout_s: float, *, abort: bool = False) -> Deferred[StopReport | None]:
        self.open.discard(n)
        self.closes.append((n, abort))
        if abort:
            return succeed(StopReport((7,), (7,)) if not self.open else None)
        d: Deferred[StopReport | None] = Deferred()
        self.pending.append(d)
        return d


class Harness:
    def __init__(self) -> None:
        self.clock = Clock()
        self.link = RecordingLink()
        self.released: list[Sequence[tuple[str, int]]] = []
        self.requeued: list[StopReport] = []
        self.keeper = SlotKeeper("a", {"cmcc": self.link}, TIMING, clock=self.clock,
                                 release=self._release, requeue=self.requeued.append)

    def _release(self, slots: Sequence[tuple[str, int]]) -> Deferred[None]:
        self.released.append(list(slots))
        return succeed(None)

    def view(self, live: tuple[str, ...], *holders: str | None) -> ClusterView:
        now = self.clock.seconds()
        return ClusterView(now, live, sharing=live, slots=tuple(
            SlotLease("cmcc", i, h, now + TIMING.lease_s if h else 0.0) for i, h in enumerate(holders, start=1)))


class TestSlotKeeper:
    def test_opens_a_bind_per_held_slot(self) -> None:
        """Slots held by this member open their binds; others' slots do not."""
        h = Harness()
        h.keeper.apply(h.view(("a", "b"), "a", "b", "a"))
        assert h.link.open == {1, 3} and h.keeper.held == {("cmcc", 1), ("cmcc", 3)}

    def test_an_unrenewed_lease_is_closed_before_it_lapses(self) -> None:
        """No heartbeat got through: the bind is cut fence_s before the lease ends, and what
        its link still queued goes back to the store."""
        h = Harness()
        h.keeper.apply(h.view(("a",), "a"))
        h.clock.advance(TIMING.lease_s - TIMING.fence_s - 0.01)
        assert h.link.open == {1}
        h.clock.advance(0.02)
        assert h.link.open == set() and h.link.closes == [(1, True)]
        assert h.requeued == [StopReport((7,), (7,))] and h.released == []   # the lease is left to lapse

    def test_renewals_keep_the_bind_open(self) -> None:
        """Each beat moves the fence with the lease."""
        h = Harness()
        for _ in range(10):
            h.keeper.apply(h.view(("a",), "a"))
            h.clock.advance(TIMING.heartbeat_s)
        assert h.link.open == {1} and h.keeper.fenced == 0

    def test_a_surplus_is_closed_gracefully_then_released(self) -> None:
        """A newcomer is short: the bind closes first, the slot is released only after."""
        h = Harness()
        h.keeper.apply(h.view(("a", "b"), "a", "a"))
        assert h.link.closes == [(2, False)] and h.released == []
        h.link.pending[0].callback(None)
        assert h.released == [[("cmcc", 2)]] and h.link.open == {1}

    def test_a_lost_lease_closes_at_once(self) -> None:
        """A view where another member holds our slot (we were too slow): abort, no release."""
        h = Harness()
        h.keeper.apply(h.view(("a", "b"), "a"))
        h.keeper.apply(h.view(("a", "b"), "b"))
        assert h.link.closes == [(1, True)] and h.released == []

    def test_stopping_opens_nothing_new(self) -> None:
        """During shutdown a slot won late is not opened (it is released by leaving)."""
        h = Harness()
        h.keeper.stop()
        h.keeper.apply(h.view(("a",), "a"))
        assert h.link.open == set()
