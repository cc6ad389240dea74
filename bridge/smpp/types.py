"""Typed values exchanged between the message pipeline and the carrier binds.

The pipeline hands :class:`OutboundSegment` objects to a carrier link and gets one
:class:`SubmitOutcome` back per segment. Both are frozen so a segment can sit in
several queues (store, link queue, in-flight table) without anyone mutating it.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.fastinit import fast_init

__all__ = ["BindStatus", "OutboundSegment", "StopReport", "SubmitOutcome"]


@fast_init
@dataclass(frozen=True, slots=True)
class OutboundSegment:
    """One submit_sm worth of message, ready for the wire.

    ``sar`` is ``(ref, total, seq)`` and becomes the SAR TLVs 0x020C/0x020E/0x020F.
    ``possible_duplicate`` is set by the link when a segment is resent after it may
    already have reached the SMSC (response timeout or connection loss).
    """

    segment_id: int
    carrier: str
    source_addr: str
    destination_addr: str
    short_message: bytes
    data_coding: int
    esm_class: int
    registered_delivery: int = 1
    sar: tuple[int, int, int] | None = None
    possible_duplicate: bool = False
    accepted_at: float = 0.0   # when the API accepted the message (latency metrics)


@fast_init
@dataclass(frozen=True, slots=True)
class SubmitOutcome:
    """The end of one segment's trip through the link: accepted or finally failed.

    ``command_status`` is the SMPP status of the last answer (0 = accepted), or a
    negative local code: :data:`bridge.smpp.status.NO_RESPONSE` (-1) when the SMSC
    never answered, :data:`~bridge.smpp.status.UNENCODABLE` (-2) when the segment
    cannot be written as a submit_sm (e.g. an address longer than SMPP allows).
    """

    segment: OutboundSegment
    command_status: int
    message_id: str | None
    final_failure: bool
    bind_id: str

    @property
    def accepted(self) -> bool:
        return self.command_status == 0 and not self.final_failure


@dataclass(frozen=True, slots=True)
class BindStatus:
    """A point-in-time view of one bind, for ``GET /v1/binds`` and metrics.

    ``since`` is the reactor time (epoch seconds) of the last state change. ``queued``
    is the carrier link's shared queue length for binds that submit, 0 for receivers.
    ``reconnects`` counts connection attempts after the first, ``received`` deliver_sm
    (receipts and MO), ``in_flight_peak`` the most submits ever outstanding at once.
    ``paused_until`` is set while the bind pauses after a throttling answer at its lowest rate.
    """

    bind_id: str
    carrier: str
    bind_type: str
    state: str
    since: float
    window: int
    in_flight: int
    in_flight_peak: int
    queued: int
    submitted: int
    throttled: int
    errors: int
    last_error: str | None
    reconnects: int
    received: int
    paused_until: float | None
    node: str = ""   # the cluster member holding the bind (the daemon fills it in)


@dataclass(frozen=True, slots=True)
class StopReport:
    """What a stopped link leaves unfinished, in enqueue order.

    ``unfinished`` holds every segment id that got no :class:`SubmitOutcome`;
    ``maybe_sent`` is the subset that may have reached the SMSC (it was in flight
    when a connection ended), so its resend should be marked as a possible duplicate.
    """

    unfinished: tuple[int, ...] = ()
    maybe_sent: tuple[int, ...] = ()
