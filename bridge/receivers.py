"""Per-receiver queues and circuits for the pusher: one slow or dead receiver delays no one else.

A receiver is a ``host:port``. Each has a :class:`Lane`: the due rows fetched for it,
its pushes in flight (capped, so it can never hold every slot of the pusher), and a
circuit. The circuit backs off per receiver, not per report: after a few consecutive
failures it opens and, while open, only one probe push goes out, at the receiver's
backoff interval. The first probe that succeeds closes it, and the held backlog drains
at full speed instead of each report waiting out its own, ever longer, backoff.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from bridge.models import OutboxItem

__all__ = ["OPEN_AFTER", "Circuit", "Lane"]

# Consecutive failures that open a circuit: one bad report (a receiver's 500 on one
# payload) does not stop the others, a receiver that is down opens it within a round.
OPEN_AFTER = 3


class Circuit(Enum):
    CLOSED = "closed"     # pushes go out, up to the lane's cap
    OPEN = "open"         # nothing goes out until ``probe_at``
    PROBING = "probing"   # one probe is in flight; its outcome closes or re-opens


@dataclass(slots=True)
class Lane:
    """One receiver's queue of fetched rows, its pushes in flight and its circuit.

    ``delay(n)`` gives the wait before the next probe after ``n`` failed probes.
    """

    key: str
    delay: Callable[[int], float]
    queue: deque[OutboxItem] = field(default_factory=deque)
    in_flight: int = 0
    circuit: Circuit = Circuit.CLOSED
    failures: int = 0          # consecutive failed pushes
    failed_probes: int = 0     # consecutive failed probes (the backoff exponent)
    probe_at: float = 0.0
    latency: float | None = None   # smoothed seconds per push, to estimate how long a backlog takes
    parked: int = 0                # rows parked in the current fetch (spreads their next attempts)

    def observe(self, seconds: float) -> None:
        self.latency = seconds if self.latency is None else 0.8 * self.latency + 0.2 * seconds

    def can_send(self, now: float, cap: int) -> bool:
        if self.circuit is Circuit.CLOSED:
            return self.in_flight < cap
        if self.circuit is Circuit.OPEN:
            return self.in_flight == 0 and now >= self.probe_at
        return False

    def launched(self) -> None:
        self.in_flight += 1
        if self.circuit is Circuit.OPEN:
            self.circuit = Circuit.PROBING

    def succeeded(self) -> bool:
        """Record a 2xx; True when it closed an open circuit (the backlog may drain)."""
        self.in_flight -= 1
        reopened = self.circuit is not Circuit.CLOSED
        self.circuit = Circuit.CLOSED
        self.failures = 0
        self.failed_probes = 0
        return reopened

    def failed(self, now: float) -> None:
        """Record a failed push; may open (or re-open) the circuit."""
        self.in_flight -= 1
        self.failures += 1
        if self.circuit is Circuit.PROBING:
            self.failed_probes += 1
            self._open(now)
        elif self.circuit is Circuit.CLOSED and self.failures >= OPEN_AFTER:
            self._open(now)

    def abandoned(self) -> None:
        """A push cancelled at shutdown: no verdict on the receiver."""
        self.in_flight -= 1
        if self.circuit is Circuit.PROBING:
            self.circuit = Circuit.OPEN

    @property
    def is_open(self) -> bool:
        return self.circuit is not Circuit.CLOSED

    @property
    def idle(self) -> bool:
        return not self.queue and self.in_flight == 0 and self.circuit is Circuit.CLOSED

    def _open(self, now: float) -> None:
        self.circuit = Circuit.OPEN
        self.probe_at = now + self.delay(self.failed_probes)
