"""Pre-send rules of the platform (PLATFORM_RULES "Frequency limits", "Sending hours").

Each rule gives a verdict without touching a carrier; the intake turns a verdict into a
final status and a report. Counting reads the store, so limits survive restarts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bridge.store.records import RecentSend

__all__ = ["FREQUENCY_WINDOWS", "MAINLAND_PREFIX", "FrequencyLimiter", "SendingWindow", "Verdict"]

MAINLAND_PREFIX = "+86"


@dataclass(frozen=True, slots=True)
class Verdict:
    status: str
    org_code: str
    reason: str


@dataclass(frozen=True, slots=True)
class _Window:
    seconds: float
    limit: int
    same_content: bool
    status: str
    code: str


# (FAQ 9.5, 11.10, 11.11) the daily cap answers BEYONDN, the others LIMIT.
FREQUENCY_WINDOWS = (
    _Window(86_400, 50, False, "BEYONDN", "SC:BEYONDN"),
    _Window(60, 15, False, "LIMIT", "SC:LIMIT1M"),
    _Window(59, 2, True, "LIMIT", "SC:LIMIT59S"),
    _Window(59 * 60, 5, True, "LIMIT", "SC:LIMIT59M"),
)


class FrequencyLimiter:
    """Counts messages already accepted to a number; exempt numbers are never limited.

    The limits are the Chinese mainland's (+86); other numbers are only limited when
    ``limit_international`` is set.
    """

    def __init__(self, exempt: frozenset[str], *, limit_international: bool = False) -> None:
        self._exempt = exempt
        self._international = limit_international

    def applies_to(self, recipient: str) -> bool:
        if recipient in self._exempt:
            return False
        return self._international or recipient.startswith(MAINLAND_PREFIX)

    def check(self, recipient: str, content_hash: str, now: float,
              history: Sequence[RecentSend]) -> Verdict | None:
        """The verdict for one more message, given the counted sends of the last 24 h."""
        if not self.applies_to(recipient) or not history:
            return None
        for w in FREQUENCY_WINDOWS:
            since = now - w.seconds
            n = sum(1 for s in history if s.created_at > since and (not w.same_content or s.content_hash == content_hash))
            if n >= w.limit:
                what = "same content" if w.same_content else "messages"
                return Verdict(w.status, w.code, f"{n} {what} to this number in {int(w.seconds)} s (limit {w.limit})")
        return None


class SendingWindow:
    """Quiet hours in the platform's time zone; non-real-time traffic waits for morning."""

    def __init__(self, quiet_start_min: int, quiet_end_min: int, utc_offset_hours: float) -> None:
        self._start = quiet_start_min
        self._end = quiet_end_min
        self._tz = timedelta(hours=utc_offset_hours)

    def release_at(self, now: float) -> float | None:
        """None when sending is allowed now, else the epoch second when the window opens."""
        if self._start == self._end:
            return None
        local = datetime.fromtimestamp(now, UTC) + self._tz
        minute = local.hour * 60 + local.minute
        if self._start > self._end:
            quiet = minute >= self._start or minute < self._end
        else:
            quiet = self._start <= minute < self._end
        if not quiet:
            return None
        opening = local.replace(hour=self._end // 60, minute=self._end % 60, second=0, microsecond=0)
        if opening <= local:
            opening += timedelta(days=1)
        return (opening - self._tz).timestamp()
