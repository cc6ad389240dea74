"""Delays before reconnecting and after throttling: exponential, capped, with jitter.

The reconnect curve is Twisted's own ``backoffPolicy`` (the one ``ClientService``
uses); the jitter is scaled to the initial delay so that binds of many carriers that
lost their SMSC at the same moment do not all come back at the same instant, and so
that short test delays are not swamped by a whole second of noise.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from twisted.application.internet import backoffPolicy

__all__ = ["ReconnectBackoff", "ThrottleBackoff"]


class ReconnectBackoff:
    """Consecutive-failure counter feeding two curves: normal and bad-credentials.

    Bad credentials start at ``credentials_s`` and grow from there, so an operator
    who fixes a password sees the bind back soon, while a wrong one never turns into
    a hot loop of bind attempts. :meth:`reset` is called once a bind has proved
    stable, not merely on bind success, so an SMSC that accepts and drops at once
    still sees the delay grow.
    """

    __slots__ = ("_credentials", "_normal", "failures")

    def __init__(self, initial_s: float, max_s: float, credentials_s: float,
                 rng: random.Random, factor: float = 2.0) -> None:
        self.failures = 0
        self._normal: Callable[[int], float] = backoffPolicy(
            initial_s, max_s, factor, jitter=lambda: rng.random() * initial_s * 0.5)
        cred_max = max(max_s, credentials_s)
        self._credentials: Callable[[int], float] = backoffPolicy(
            credentials_s, cred_max, factor, jitter=lambda: rng.random() * credentials_s * 0.5)

    def next_delay(self, *, credentials: bool = False) -> float:
        attempt = self.failures
        self.failures += 1
        return (self._credentials if credentials else self._normal)(attempt)

    def reset(self) -> None:
        self.failures = 0


class ThrottleBackoff:
    """Pause length after ESME_RTHROTTLED/RMSGQFUL: doubles per throttle episode."""

    __slots__ = ("_max", "_initial", "episodes")

    def __init__(self, initial_s: float, max_s: float) -> None:
        self._initial = initial_s
        self._max = max_s
        self.episodes = 0

    def next_pause(self) -> float:
        pause = min(self._max, self._initial * (2 ** min(self.episodes, 30)))
        self.episodes += 1
        return pause

    def reset(self) -> None:
        self.episodes = 0
