"""A bind's send rate, adapted to what the SMSC accepts (AIMD on the token bucket).

An SMSC's TPS limit is rarely known exactly and is often shared by every bind of an
account. A fixed pause after ESME_RTHROTTLED does not find it: each resume sends a
burst that is throttled again. Instead the rate is *multiplicatively decreased* on a
throttling answer and *additively increased* on every acceptance, never above the
configured ``tps`` (the ceiling) nor below a floor, like TCP's congestion window.

- One decrease per round: only a throttle of a segment sent *after* the last decrease
  counts, since segments already on the wire were sent at the old rate.
- The decrease goes to ``decrease`` times the rate, or to the rate the SMSC actually
  accepted over the last second if that is lower, so a bind configured far above the
  SMSC's limit lands near it in one round rather than in ten.
- The increase per second is a fraction (``climb``) of the rate at the last decrease,
  at least 1/s, so a cycle takes about as long at 15 TPS as at 1,500.
- A throttle before anything was accepted says nothing about the limit: the rate
  drops to the floor and then doubles every second of acceptances (TCP's slow
  start) until the next throttle.

With no ceiling the bind sends unpaced until its first throttle; the controller then
starts at the rate the SMSC accepted over the last second. Time is passed in, so tests drive it with a Clock.
"""

from __future__ import annotations

import math
from collections import deque

__all__ = ["AdaptiveRate"]

#: The accepted rate is measured over this many seconds.
_MEASURE_S = 1.0


class AdaptiveRate:
    """Current rate (segments per second) of one bind; ``None`` while unlimited."""

    __slots__ = ("_accepts", "_accepted_in_window", "_ceiling", "_climb", "_decrease",
                 "_decreased_at", "_peak", "_slow_start", "decreases", "floor", "rate")

    def __init__(self, ceiling: float | None, floor: float, *, decrease: float = 0.7,
                 climb: float = 0.1) -> None:
        if floor <= 0 or (ceiling is not None and ceiling <= 0):
            raise ValueError("floor and ceiling must be positive")
        if not 0 < decrease < 1 or climb <= 0:
            raise ValueError("decrease must be in (0, 1) and climb positive")
        self._ceiling = ceiling
        self.floor = min(floor, ceiling) if ceiling is not None else floor
        self._decrease = decrease
        self._climb = climb
        self.rate: float | None = ceiling
        self._peak = ceiling or 0.0
        self._decreased_at = -math.inf
        self._accepts: deque[tuple[float, int]] = deque()
        self._accepted_in_window = 0
        self._slow_start = False
        self.decreases = 0

    @property
    def at_floor(self) -> bool:
        return self.rate is not None and self.rate <= self.floor

    def accepted_rate(self, now: float) -> float:
        """Segments accepted per second over the last second."""
        self._trim(now)
        return self._accepted_in_window / _MEASURE_S

    def accepted(self, count: int, now: float) -> None:
        """``count`` segments were accepted: additive increase, up to the ceiling."""
        if count <= 0:
            return
        self._accepts.append((now, count))
        self._accepted_in_window += count
        self._trim(now)
        if self.rate is None:
            return
        if self._slow_start:
            rate = self.rate + count  # +1 per acceptance: doubles over a second's worth
        else:
            per_second = max(1.0, self._climb * self._peak)
            # +per_second over one second's worth of acceptances at the current rate
            rate = self.rate + per_second * count / self.rate
        self.rate = rate if self._ceiling is None else min(self._ceiling, rate)

    def throttled(self, sent_at: float, now: float) -> bool:
        """A segment sent at ``sent_at`` was throttled; True if the rate went down."""
        if sent_at <= self._decreased_at:
            return False  # on the wire before the last decrease: already accounted for
        measured = self.accepted_rate(now)
        if self.rate is None:  # first throttle of an unpaced bind: start where the SMSC is
            current = target = max(measured, self.floor)
        else:
            current = self.rate
            target = current * self._decrease
            if measured > 0:
                target = min(target, measured)
            target = max(self.floor, target)
        if self.rate is not None and target >= self.rate:
            return False  # at the floor already
        self._peak = current
        self._slow_start = measured == 0
        self.rate = target
        self._decreased_at = now
        self.decreases += 1
        return True

    def _trim(self, now: float) -> None:
        accepts = self._accepts
        while accepts and accepts[0][0] <= now - _MEASURE_S:
            self._accepted_in_window -= accepts.popleft()[1]
