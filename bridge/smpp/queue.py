"""A carrier link's in-memory submit queue, shared by the link's submitting binds.

Fresh segments wait in a FIFO; segments that come back (throttled, transient error,
timeout, disconnect) go into a heap keyed by their enqueue ordinal and are always
taken first, so the oldest unfinished segment is always the next one sent and a
resend never overtakes nor falls behind the traffic queued after it.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
from collections import deque
from collections.abc import Iterable

from bridge.smpp.types import OutboundSegment

__all__ = ["QueueEntry", "SegmentQueue"]


@dataclasses.dataclass(slots=True, eq=False)
class QueueEntry:
    """A segment plus the link's bookkeeping for it (mutable, link-internal)."""

    ordinal: int
    segment: OutboundSegment
    transient_failures: int = 0
    timeouts: int = 0
    maybe_sent: bool = False

    def mark_possible_duplicate(self) -> None:
        """It may have reached the SMSC: the resend says so."""
        self.maybe_sent = True
        if not self.segment.possible_duplicate:
            self.segment = dataclasses.replace(self.segment, possible_duplicate=True)


class SegmentQueue:
    __slots__ = ("_fresh", "_ordinals", "_returned")

    def __init__(self) -> None:
        self._fresh: deque[QueueEntry] = deque()
        self._returned: list[tuple[int, QueueEntry]] = []
        self._ordinals = itertools.count()

    def __len__(self) -> int:
        return len(self._fresh) + len(self._returned)

    def push(self, segments: Iterable[OutboundSegment]) -> int:
        before = len(self._fresh)
        ordinals = self._ordinals
        self._fresh.extend(QueueEntry(next(ordinals), s) for s in segments)
        return len(self._fresh) - before

    def put_back(self, entries: Iterable[QueueEntry]) -> None:
        returned = self._returned
        for entry in entries:
            heapq.heappush(returned, (entry.ordinal, entry))

    def take(self, count: int) -> list[QueueEntry]:
        """Up to ``count`` entries, oldest first."""
        out: list[QueueEntry] = []
        returned, fresh = self._returned, self._fresh
        while returned and len(out) < count:
            out.append(heapq.heappop(returned)[1])
        need = count - len(out)
        if need > 0 and fresh:
            if need >= len(fresh):
                out.extend(fresh)
                fresh.clear()
            else:
                popleft = fresh.popleft
                out.extend(popleft() for _ in range(need))
        return out

    def take_all(self) -> list[QueueEntry]:
        return self.take(len(self))
