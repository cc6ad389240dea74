"""What happens to a submitted message: receipt stat, err and delay, decided by data.

Order of precedence: the carrier-side blacklist (``MBBLACK``), then the first
recipient-suffix rule that matches, then the seeded random mix. The seed makes a
load run reproducible: the same submits in the same order get the same outcomes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from carriers.sim.config import CarrierSimConfig
from carriers.sim.stat import default_err, is_success

__all__ = ["Outcome", "OutcomeEngine", "receipt_requested"]

BLACKLIST_STAT = "MBBLACK"


@dataclass(frozen=True, slots=True)
class Outcome:
    """The fate of one submit_sm; ``stat is None`` means no receipt will ever come."""

    stat: str | None
    err: str
    delay_ms: int
    reason: str


def receipt_requested(registered_delivery: int, stat: str | None) -> bool:
    """SMPP 3.4 5.2.17 bits 0-1: 1 = always, 2 = on failure only, 0/3 = never."""
    if stat is None:
        return False
    mode = registered_delivery & 0x03
    if mode == 1:
        return True
    if mode == 2:
        return not is_success(stat)
    return False


class OutcomeEngine:
    """Decides outcomes for one carrier from its rules, blacklist and seeded mix."""

    def __init__(self, config: CarrierSimConfig) -> None:
        self._config = config
        self._rng = random.Random(config.seed)
        self._stats = [m.stat for m in config.mix]
        self._errs = {m.stat: m.err for m in config.mix}
        self._weights = [m.weight for m in config.mix]

    def reset(self) -> None:
        """Restart the random stream, so a run after ``POST /reset`` repeats exactly."""
        self._rng = random.Random(self._config.seed)

    def _delay(self) -> int:
        lo, hi = self._config.receipt_delay_ms
        return lo if lo == hi else self._rng.randint(lo, hi)

    def decide(self, destination: str) -> Outcome:
        number = self._config.normalise(destination)
        delay = self._delay()
        if number in self._config.blacklist:
            return Outcome(BLACKLIST_STAT, default_err(BLACKLIST_STAT), delay, "blacklist")
        for rule in self._config.rules:
            if number.endswith(rule.suffix):
                return Outcome(rule.stat, rule.err, delay, f"suffix:{rule.suffix}")
        stat = self._rng.choices(self._stats, self._weights)[0]
        return Outcome(stat, self._errs[stat], delay, "mix")
