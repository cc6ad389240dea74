"""Typed records passed between the intake, the store, the dispatcher and the reporters."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "MessageRecord",
    "NewMessage",
    "NewMo",
    "NewSegment",
    "OutboxItem",
    "SegmentRecord",
    "SegmentState",
    "MessageState",
]


class MessageState:
    HELD = "held"          # waiting for sending hours
    QUEUED = "queued"      # segments queued or in flight
    FINAL = "final"        # mapped final status known; report queued


class SegmentState:
    QUEUED = "queued"
    DISPATCHED = "dispatched"   # handed to a bind; no submit_sm_resp stored yet
    SUBMITTED = "submitted"     # submit_sm_resp stored, waiting for the receipt
    FINAL = "final"


@dataclass(frozen=True, slots=True)
class NewSegment:
    seq: int
    total: int
    short_message: bytes
    data_coding: int
    esm_class: int
    ref: int | None
    sar: bool


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A recipient's message as accepted by the intake, before it is stored."""

    id: str
    app_id: str
    channel: str
    recipient: str
    carrier: str | None
    klass: str
    text: str
    content_hash: str
    status_callback: str
    extend: str
    created_at: float
    state: str
    status: str | None              # set when a pre-send rule finalised it
    org_code: str | None
    release_at: float | None
    segments: tuple[NewSegment, ...]
    counted: bool                   # counts against the frequency limits


@dataclass(frozen=True, slots=True)
class SegmentRecord:
    id: int
    message_id: str
    carrier: str
    seq: int
    total: int
    source_addr: str
    destination_addr: str
    short_message: bytes
    data_coding: int
    esm_class: int
    ref: int | None
    sar: bool
    possible_duplicate: bool


@dataclass(frozen=True, slots=True)
class MessageRecord:
    id: str
    app_id: str
    channel: str
    recipient: str
    carrier: str | None
    klass: str
    state: str
    status: str | None
    org_code: str | None
    total: int
    status_callback: str
    extend: str
    created_at: float
    final_at: float | None
    reported: bool


@dataclass(frozen=True, slots=True)
class OutboxItem:
    id: int
    kind: str          # "report" | "uplink"
    ref_id: str        # smsMsgId of the message or MO
    url: str
    payload: str       # JSON text, exactly what is POSTed
    attempts: int
    created_at: float
    next_attempt_at: float


@dataclass(frozen=True, slots=True)
class NewMo:
    id: str
    carrier: str
    source: str
    destination: str
    channel: str | None
    app_id: str | None
    body: str
    created_at: float
    incomplete: bool
    unsubscribe: bool
    downlink_id: str | None
