"""Token bucket per bind, one token per segment (not per message), with burst.

Counting segments is what the SMSC counts: a three-part message is three submit_sm.
The bucket is driven by the reactor clock passed in, so tests advance time by hand.
"""

from __future__ import annotations

__all__ = ["TokenBucket"]


class TokenBucket:
    """``rate`` tokens per second, at most ``capacity`` saved up; starts full."""

    __slots__ = ("_last", "_tokens", "capacity", "rate")

    def __init__(self, rate: float, capacity: int, now: float) -> None:
        if rate <= 0 or capacity < 1:
            raise ValueError("rate must be positive and capacity at least 1")
        self.rate = float(rate)
        self.capacity = float(capacity)
        self._tokens = float(capacity)
        self._last = now

    def _refill(self, now: float) -> None:
        if now > self._last:
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
            self._last = now

    def take(self, wanted: int, now: float) -> int:
        """Take up to ``wanted`` whole tokens; return how many were granted."""
        self._refill(now)
        granted = min(wanted, int(self._tokens))
        if granted > 0:
            self._tokens -= granted
        return granted

    def delay_for(self, tokens: int, now: float) -> float:
        """Seconds until ``tokens`` (capped at capacity) whole tokens are available."""
        self._refill(now)
        missing = min(float(tokens), self.capacity) - self._tokens
        return max(0.0, missing / self.rate)

    def refund(self, tokens: int) -> None:
        """Give back tokens taken but not used."""
        self._tokens = min(self.capacity, self._tokens + tokens)

    def set_rate(self, rate: float, capacity: int, now: float) -> None:
        """New rate and burst from ``now`` on (tokens saved so far are kept, up to capacity)."""
        if rate <= 0 or capacity < 1:
            raise ValueError("rate must be positive and capacity at least 1")
        self._refill(now)
        self.rate = float(rate)
        self.capacity = float(capacity)
        self._tokens = min(self._tokens, self.capacity)

    def drain(self, now: float) -> None:
        """Drop the saved tokens: the next one comes ``1 / rate`` seconds from now."""
        self._refill(now)
        self._tokens = 0.0

    def available(self, now: float) -> float:
        self._refill(now)
        return self._tokens
