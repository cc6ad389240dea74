"""Moves queued segments from the store to the carrier links and records what came back.

The queue lives in the store; each link holds only a few windows' worth in memory, so a
million queued messages cost disk, not RAM. The feeder reads only committed rows (it
runs after a commit), so nothing goes on the wire that a crash could un-accept.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import structlog
from twisted.internet.defer import Deferred

from bridge.finaliser import Finaliser
from bridge.latency import LATENCY, accepted_at
from bridge.matching import ReceiptMatcher
from bridge.models import SegmentRecord
from bridge.smpp.types import BindStatus, OutboundSegment, StopReport, SubmitOutcome
from bridge.store import Store
from bridge.store.records import CarrierRoom, SubmitAccepted
from carriers.profiles import CarrierProfile, canonical_message_id

__all__ = ["Dispatcher", "LinkLike", "smpp_failure_status"]

log = structlog.get_logger("dispatcher")


class LinkLike(Protocol):
    def enqueue(self, segments: Iterable[OutboundSegment]) -> None: ...
    def room(self) -> int: ...
    def snapshot(self) -> list[BindStatus]: ...
    def start(self) -> None: ...
    def stop(self, drain_timeout_s: float) -> Deferred[StopReport]: ...


def smpp_failure_status(command_status: int) -> tuple[str, str]:
    """A submit refused for good: platform status and orgCode keeping the SMPP status."""
    org = f"SMPP:0x{command_status & 0xFFFFFFFF:08X}" if command_status >= 0 else "SMPP:NORESP"
    if command_status in (0x0A, 0x0B, 0x48, 0x49, 0x50, 0x51):   # bad source/destination address
        return "REJECTD", org
    return "UNDELIV", org


class Dispatcher:
    """Feeds links from the store; applies submit outcomes (and receipts that beat them)."""

    def __init__(self, store: Store, finaliser: Finaliser, matcher: ReceiptMatcher,
                 profiles: Mapping[str, CarrierProfile], *, reactor: Any, now: Callable[[], float] = time.time) -> None:
        self._store = store
        self._finaliser = finaliser
        self._matcher = matcher
        self._profiles = profiles
        self._reactor = reactor
        self._now = now
        self.links: dict[str, LinkLike] = {}
        self._feed_pending = False
        self._kicked: set[str] | None = set()   # links the pending feed covers (None: every one)
        self._stopping = False
        self._marking: dict[str, int] = {}   # taken from the store, waiting for their commit
        self.submitted = 0
        self.failed = 0
        self._ticker: Any = None

    # -- lifecycle ---------------------------------------------------------------------

    def add_link(self, carrier: str, link: LinkLike) -> None:
        self.links[carrier] = link

    def start(self, *, resend_dispatched: bool = True) -> Deferred[None]:
        """Start the links; first, after a crash, requeue what was in flight (flagged)."""
        d: Deferred[int] = (self._store.messages.requeue_all_dispatched() if resend_dispatched
                            else Deferred.fromCoroutine(_zero()))

        def started(resent: int) -> None:
            if resent:
                log.warning("dispatch.resend_after_restart", segments=resent)
            for link in self.links.values():
                link.start()
            self._tick()
        return d.addCallback(started)

    def stop(self, drain_timeout_s: float) -> Deferred[None]:
        """Stop feeding; let links drain, then put what they did not finish back in the queue."""
        from twisted.internet.defer import gatherResults

        self._stopping = True
        if self._ticker is not None and self._ticker.active():
            self._ticker.cancel()
        ds = [link.stop(drain_timeout_s) for link in self.links.values()]

        def requeue(reports: list[StopReport]) -> Deferred[None]:
            for rep in reports:
                self.requeue_unfinished(rep)
            return self._store.durable()

        return gatherResults(ds, consumeErrors=True).addCallback(requeue)

    def requeue_unfinished(self, report: StopReport) -> None:
        """Segments a link will not send (it stopped, or lost its last bind) go back to the queue."""
        maybe = set(report.maybe_sent)
        self._store.messages.requeue([s for s in report.unfinished if s in maybe], possible_duplicate=True)
        self._store.messages.requeue([s for s in report.unfinished if s not in maybe], possible_duplicate=False)
        self.kick()

    def _tick(self) -> None:
        """Safety net: feed periodically even if nobody kicked (e.g. after a reconnect)."""
        self.kick()
        self._ticker = self._reactor.callLater(0.05, self._tick)

    # -- feeding -----------------------------------------------------------------------

    def kick(self, carriers: Iterable[str] | None = None) -> None:
        """Feed the links just before the store's next group commit (one feed however many
        kicks; at the next turn of the reactor when no commit is pending).

        ``carriers``: only those links have new work or room (the default: every link).
        A feed asks the store once per link it feeds, so intake names its carriers; fed
        at the commit, that is one statement for everything the commit's requests queued.

        Segments are taken in the transaction that is committed then, usually the one that
        queued them, so one group commit makes the message and its "dispatched" mark
        durable together: the submit goes out one fsync after intake instead of two. A
        segment reaches its link only once that commit is done (``_taken``); if it fails,
        the rows that queued the segment are gone with it and nothing is sent.
        """
        if self._stopping:
            return
        if carriers is None:
            self._kicked = None
        elif self._kicked is not None:
            self._kicked.update(carriers)
        if self._feed_pending:
            return
        self._feed_pending = True
        if not self._store.before_commit(self._feed):
            self._reactor.callLater(0, self._feed)

    def _feed(self) -> None:
        kicked, self._kicked = self._kicked, set()
        self._feed_pending = False
        if self._stopping:
            return
        rooms: list[CarrierRoom] = []
        for carrier, link in self.links.items():
            if kicked is not None and carrier not in kicked:
                continue
            room = link.room() - self._marking.get(carrier, 0)
            if room <= 0:
                continue
            # Counted as taken until the store answers, so a second feed cannot overfill.
            self._marking[carrier] = self._marking.get(carrier, 0) + room
            rooms.append(CarrierRoom(carrier, room))
        if rooms:   # one store call for every link fed
            self._store.messages.take_queued_for(rooms).addCallbacks(
                self._taken, self._take_failed, callbackArgs=(rooms,), errbackArgs=(rooms,))

    def _taken(self, records: list[SegmentRecord], rooms: list[CarrierRoom]) -> None:
        by_carrier: dict[str, list[SegmentRecord]] = {}
        for record in records:
            by_carrier.setdefault(record.carrier, []).append(record)
        for room in rooms:
            self._marking[room.carrier] -= room.limit - len(by_carrier.get(room.carrier, ()))
        if by_carrier:
            # "dispatched" must be durable before the submit goes out: after a crash
            # it is what marks the resend as a possible duplicate.
            self._store.durable().addCallbacks(self._hand_over, self._hand_over_failed,
                                               callbackArgs=(by_carrier,), errbackArgs=(by_carrier,))

    def _take_failed(self, failure: Any, rooms: list[CarrierRoom]) -> None:
        for room in rooms:
            self._marking[room.carrier] -= room.limit
        log.error("dispatch.take_failed", carriers=[room.carrier for room in rooms], error=str(failure.value))

    def _hand_over_failed(self, failure: Any, by_carrier: dict[str, list[SegmentRecord]]) -> None:
        # The dispatched mark did not commit: the rows are still queued in the store.
        for carrier, records in by_carrier.items():
            self._marking[carrier] -= len(records)
        log.error("dispatch.feed_failed", carriers=sorted(by_carrier), error=str(failure.value))

    def _hand_over(self, _: object, by_carrier: dict[str, list[SegmentRecord]]) -> None:
        for carrier, records in by_carrier.items():
            self._hand_over_to(carrier, self.links[carrier], records)

    def _hand_over_to(self, carrier: str, link: LinkLike, records: list[SegmentRecord]) -> None:
        self._marking[carrier] -= len(records)
        if self._stopping:
            self._store.messages.requeue([r.id for r in records], possible_duplicate=False)
            return
        # The link may have lost binds while the store answered (a cluster slot handed over):
        # what it has no room for any more goes back to the queue, unsent, for whoever binds.
        fits = max(0, link.room())
        if fits < len(records):
            self._store.messages.requeue([r.id for r in records[fits:]], possible_duplicate=False)
            records = records[:fits]
            self.kick()
        if records:
            link.enqueue([_outbound(r) for r in records])

    # -- outcomes ----------------------------------------------------------------------

    def on_outcomes(self, outcomes: list[SubmitOutcome]) -> None:
        now = self._now()
        accepted: list[SubmitAccepted] = []
        for o in outcomes:
            seg = o.segment
            if o.accepted and o.message_id is not None:
                profile = self._profiles[seg.carrier]
                cid = canonical_message_id(profile.message_id_dialect, o.message_id)
                accepted.append(SubmitAccepted(seg.segment_id, seg.carrier, cid, o.message_id, now,
                                               seg.possible_duplicate))
                LATENCY.submitted(seg.carrier, seg.segment_id, now)
            else:
                status, org = smpp_failure_status(o.command_status)
                self._finaliser.segment_final(seg.segment_id, status, org, o.command_status,
                                              possible_duplicate=seg.possible_duplicate).addErrback(self._failed)
                self.failed += 1
        if accepted:
            self.submitted += len(accepted)
            d = self._store.messages.record_submitted(accepted)
            d.addCallback(lambda early: self._matcher.apply_early(early) if early else None)
            d.addErrback(self._failed)
        self.kick({o.segment.carrier for o in outcomes})   # room freed on these links

    def _failed(self, failure: Any) -> None:
        log.error("dispatch.outcome_not_stored", error=str(failure.value))

    def bind_status(self) -> list[BindStatus]:
        out: list[BindStatus] = []
        for link in self.links.values():
            out.extend(link.snapshot())
        return out


async def _zero() -> int:
    return 0


def _outbound(r: SegmentRecord) -> OutboundSegment:
    return OutboundSegment(
        segment_id=r.id, carrier=r.carrier, source_addr=r.source_addr,
        destination_addr=r.destination_addr,
        short_message=r.short_message, data_coding=r.data_coding, esm_class=r.esm_class,
        registered_delivery=1, sar=(r.ref or 0, r.total, r.seq) if r.sar else None,
        possible_duplicate=r.possible_duplicate, accepted_at=accepted_at(r.message_id),
    )
