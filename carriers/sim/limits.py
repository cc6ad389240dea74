"""Per-account TPS limit as a token bucket on the injected clock.

A bucket (capacity = one second's worth) rather than fixed one-second windows, so
the limit does not depend on where a burst falls relative to a second boundary:
``tps + k`` submits in one instant get exactly ``k`` throttled answers.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

__all__ = ["TokenBucket"]


class TokenBucket:
    """``take()`` is True while the account is within ``rate`` per second."""

    def __init__(self, rate: float, clock: IReactorTime, burst: float | None = None) -> None:
        self.rate = float(rate)
        self.capacity = float(burst if burst is not None else rate)
        self._clock = clock
        self._tokens = self.capacity
        self._at = clock.seconds()

    def take(self) -> bool:
        now = self._clock.seconds()
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def reset(self) -> None:
        self._tokens = self.capacity
        self._at = self._clock.seconds()
