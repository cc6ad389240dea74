"""Typed records passed between the intake, the store, the dispatcher and the reporters."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from bridge.fastinit import fast_init

__all__ = [
    "InboundMessage",
    "MessageRecord",
    "NewMessage",
    "NewMo",
    "NewSegment",
    "OutboxItem",
    "SegmentRecord",
    "SegmentState",
    "MessageState",
]


class MessageState(StrEnum):
    HELD = "held"          # waiting for sending hours
    QUEUED = "queued"      # segments queued or in flight
    FINAL = "final"        # mapped final status known; report queued


class SegmentState(StrEnum):
    QUEUED = "queued"
    DISPATCHED = "dispatched"   # handed to a bind; no submit_sm_resp stored yet
    SUBMITTED = "submitted"     # submit_sm_resp stored, waiting for the receipt
    FINAL = "final"


@fast_init
@dataclass(frozen=True, slots=True)
class NewSegment:
    seq: int
    total: int
    short_message: bytes
    data_coding: int
    esm_class: int
    ref: int | None
    sar: bool


@fast_init
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


@fast_init
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


@fast_init
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


@fast_init
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


_INBOUND_FIELDS = (
    "source_addr", "destination_addr", "esm_class", "data_coding", "short_message", "message_payload",
    "receipted_message_id", "message_state", "network_error_code",
    "sar_msg_ref_num", "sar_total_segments", "sar_segment_seqnum",
)
_INBOUND_NAMES = frozenset(_INBOUND_FIELDS)


@fast_init
@dataclass(frozen=True, slots=True)
class InboundMessage(Mapping[str, object]):
    """A message from a carrier (receipt or MO), free of the protocol it came in.

    The receipt parser and the MO decoder read it by field name (it is a read-only
    mapping of the fields below that are set), so the SMPP layer's PDU objects stop at
    the link and the two consumers stay pure functions over plain values.
    """

    source_addr: str = ""
    destination_addr: str = ""
    esm_class: int = 0
    data_coding: int = 0
    short_message: bytes = b""
    message_payload: bytes | None = None
    receipted_message_id: str | None = None
    message_state: int | None = None
    network_error_code: bytes | None = None
    sar_msg_ref_num: int | None = None
    sar_total_segments: int | None = None
    sar_segment_seqnum: int | None = None

    @classmethod
    def from_fields(cls, fields: Mapping[str, object]) -> InboundMessage:
        """From decoded protocol fields; unknown names are dropped, wrong types kept as given."""
        return cls(**{k: fields[k] for k in _INBOUND_FIELDS if fields.get(k) is not None})  # type: ignore[arg-type]

    def __getitem__(self, key: str) -> object:
        if key not in _INBOUND_NAMES:
            raise KeyError(key)
        value = getattr(self, key)
        if value is None:
            raise KeyError(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        """Mapping.get without a KeyError raised and caught per absent field (the parsers'
        usual read, a dozen per receipt)."""
        if key in _INBOUND_NAMES:
            value = getattr(self, key)
            if value is not None:
                return value
        return default

    def __iter__(self) -> Iterator[str]:
        return (k for k in _INBOUND_FIELDS if getattr(self, k) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)
