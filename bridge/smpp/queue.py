"""A carrier link's in-memory submit queue, shared by the link's submitting binds.

Fresh segments wait in a FIFO; segments that come back (throttled, transient error,
timeout, disconnect) go into a heap keyed by their enqueue ordinal and are always
taken first, so the oldest unfinished segment is always the next one sent and a
resend never overtakes nor falls behind the traffic queued after it.

One exception keeps a long message's parts in order at the SMSC: at most one part of
a message is out (taken and neither finished nor put back) at a time, whichever bind
took it. A throttled part 2 therefore cannot be overtaken by a part 3 already on the
wire; the next part waits for its predecessor's answer while other messages' segments
go ahead of it. Single-part segments are never held.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
from collections import deque
from collections.abc import Iterable

from bridge.smpp.types import OutboundSegment
from bridge.textcodec import split_udh

__all__ = ["QueueEntry", "SegmentQueue", "message_key"]

#: Entries looked at beyond ``count`` in one take() while skipping held parts.
_SCAN_EXTRA = 256

MessageKey = tuple[str, int, int]


def message_key(segment: OutboundSegment) -> MessageKey | None:
    """(destination, reference, total) of a part of a concatenated message, else None."""
    if segment.sar is not None:
        ref, total, _seq = segment.sar
    else:
        concat, _ = split_udh(segment.short_message, segment.esm_class)
        if concat is None:
            return None
        ref, total = concat.ref, concat.total
    return (segment.destination_addr, ref, total) if total > 1 else None


@dataclasses.dataclass(slots=True, eq=False)
class QueueEntry:
    """A segment plus the link's bookkeeping for it (mutable, link-internal)."""

    ordinal: int
    segment: OutboundSegment
    message: MessageKey | None = None
    transient_failures: int = 0
    timeouts: int = 0
    maybe_sent: bool = False

    def mark_possible_duplicate(self) -> None:
        """It may have reached the SMSC: the resend says so."""
        self.maybe_sent = True
        if not self.segment.possible_duplicate:
            self.segment = dataclasses.replace(self.segment, possible_duplicate=True)


class SegmentQueue:
    __slots__ = ("_fresh", "_ordinals", "_out", "_returned")

    def __init__(self) -> None:
        self._fresh: deque[QueueEntry] = deque()
        self._returned: list[tuple[int, QueueEntry]] = []
        self._ordinals = itertools.count()
        self._out: set[MessageKey] = set()  # messages with a part taken and not yet back

    def __len__(self) -> int:
        return len(self._fresh) + len(self._returned)

    def push(self, segments: Iterable[OutboundSegment]) -> int:
        before = len(self._fresh)
        ordinals = self._ordinals
        self._fresh.extend(QueueEntry(next(ordinals), s, message_key(s)) for s in segments)
        return len(self._fresh) - before

    def put_back(self, entries: Iterable[QueueEntry]) -> None:
        """Entries that will be sent again (throttled, retried, unanswered)."""
        returned, out = self._returned, self._out
        for entry in entries:
            if entry.message is not None:
                out.discard(entry.message)
            heapq.heappush(returned, (entry.ordinal, entry))

    def finished(self, entries: Iterable[QueueEntry]) -> bool:
        """Entries that will not come back (accepted or finally failed): their next part may go.

        True if a message's next part may now be waiting to be taken."""
        out = self._out
        released = False
        if out:
            for entry in entries:
                if entry.message is not None and entry.message in out:
                    out.remove(entry.message)
                    released = True
        return released

    def take(self, count: int) -> list[QueueEntry]:
        """Up to ``count`` entries, oldest first, skipping parts whose predecessor is out."""
        taken: list[QueueEntry] = []
        held: list[QueueEntry] = []
        out = self._out
        returned, fresh = self._returned, self._fresh
        budget = count + _SCAN_EXTRA
        while returned and len(taken) < count and budget > 0:
            budget -= 1
            entry = heapq.heappop(returned)[1]
            if entry.message is None:
                taken.append(entry)
            elif entry.message in out:
                held.append(entry)
            else:
                out.add(entry.message)
                taken.append(entry)
        for entry in held:
            heapq.heappush(returned, (entry.ordinal, entry))
        held.clear()
        popleft = fresh.popleft
        while fresh and len(taken) < count and budget > 0:
            budget -= 1
            entry = popleft()
            if entry.message is None:
                taken.append(entry)
            elif entry.message in out:
                held.append(entry)
            else:
                out.add(entry.message)
                taken.append(entry)
        if held:
            fresh.extendleft(reversed(held))
        return taken

    def take_all(self) -> list[QueueEntry]:
        """Everything, held parts included (the link is stopping)."""
        entries = [heapq.heappop(self._returned)[1] for _ in range(len(self._returned))]
        entries.extend(self._fresh)
        self._fresh.clear()
        self._out.clear()
        return entries
