"""Typed records that cross the store interface, in and out; states are enums."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from bridge.fastinit import fast_init
from bridge.models import MessageRecord, NewMo, OutboxItem

__all__ = [
    "AdmissionFacts",
    "AdmissionQuery",
    "BlacklistEntry",
    "CarrierRoom",
    "ClusterView",
    "DeadPush",
    "EarlyReceipt",
    "ExportRow",
    "FinalChoice",
    "Heartbeat",
    "MessageReceipt",
    "MoCounts",
    "MoPart",
    "MoRecord",
    "NodeInfo",
    "PruneCounts",
    "PushKind",
    "PushRecord",
    "PushState",
    "RawReceipt",
    "ReceiptApplied",
    "ReceiptArrival",
    "ReceiptOutcome",
    "RecentSend",
    "ReportCopy",
    "SegmentDetail",
    "SegmentFinal",
    "SegmentMatch",
    "SegmentStatus",
    "SlotLease",
    "StateCount",
    "SubmitAccepted",
    "UnmatchedReceipt",
]


class PushKind(StrEnum):
    REPORT = "report"
    UPLINK = "uplink"
    REPLAY = "replay"


class ReceiptOutcome(StrEnum):
    """What a receipt did; each is logged with the raw receipt and counted."""

    APPLIED = "applied"            # finalised a segment
    INTERMEDIATE = "intermediate"  # ENROUTE/ACCEPTD: logged, not final
    DUPLICATE = "duplicate"        # segment already final: nothing changes
    UNMATCHED = "unmatched"        # no segment (yet) has this id
    UNPARSEABLE = "unparseable"


class PushState(StrEnum):
    PENDING = "pending"
    ACKED = "acked"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class SegmentMatch:
    """The segment a receipt's carrier id points at."""

    segment_id: int
    message_id: str
    state: str
    total: int


@fast_init
@dataclass(frozen=True, slots=True)
class SegmentStatus:
    """What the finaliser needs of each segment of a message."""

    seq: int
    state: str
    status: str | None
    org_code: str | None


@fast_init
@dataclass(frozen=True, slots=True)
class FinalisedMessage:
    """A message just made final, and the report queued for it (None without a statusCallback)."""

    message: MessageRecord
    report: OutboxItem | None


@fast_init
@dataclass(frozen=True, slots=True)
class SegmentFinal:
    """A segment just made final, with every segment of its message as of that moment."""

    message_id: str
    segments: tuple[SegmentStatus, ...]


@fast_init
@dataclass(frozen=True, slots=True)
class FinalChoice:
    """The status a message takes when its last segment is final: the deciding segment's."""

    status: str
    org_code: str
    seq: int


@fast_init
@dataclass(frozen=True, slots=True)
class ReceiptArrival:
    """A parsed receipt to apply in one store call: where it points, what it says, its log line."""

    carrier: str
    canonical_id: str
    final: bool          # a final status (DELIVRD, UNDELIV...), not ENROUTE/ACCEPTD
    status: str
    org_code: str
    received_at: float
    receipt_json: str


@fast_init
@dataclass(frozen=True, slots=True)
class ReceiptApplied:
    """What one receipt changed: its outcome, its segment, and the message it made final."""

    outcome: ReceiptOutcome
    segment_id: int | None
    finalised: FinalisedMessage | None


@dataclass(frozen=True, slots=True)
class SegmentDetail:
    seq: int
    state: str
    status: str | None
    org_code: str | None
    carrier_msg_id: str | None
    raw_msg_id: str | None
    submit_status: int | None
    submitted_at: float | None
    done_at: float | None
    possible_duplicate: bool


@fast_init
@dataclass(frozen=True, slots=True)
class CarrierRoom:
    """How many queued segments a carrier's link can take now."""

    carrier: str
    limit: int


@fast_init
@dataclass(frozen=True, slots=True)
class SubmitAccepted:
    """An SMSC's positive submit_sm_resp for one segment."""

    segment_id: int
    carrier: str
    canonical_id: str
    raw_id: str
    at: float
    possible_duplicate: bool


@dataclass(frozen=True, slots=True)
class EarlyReceipt:
    """A receipt stored unmatched whose segment now has its carrier id: apply it."""

    receipt_id: int
    segment_id: int
    carrier: str
    receipt_json: str


@dataclass(frozen=True, slots=True)
class UnmatchedReceipt:
    receipt_id: int
    receipt_json: str


@dataclass(frozen=True, slots=True)
class RawReceipt:
    id: int
    carrier: str
    receipt_json: str
    received_at: float


@dataclass(frozen=True, slots=True)
class RecentSend:
    """A counted message to ``recipient``: what the frequency limits count."""

    recipient: str
    created_at: float
    content_hash: str


@dataclass(frozen=True, slots=True)
class BlacklistEntry:
    channel: str
    number: str
    created_at: float
    mo_id: str | None


@dataclass(frozen=True, slots=True)
class MoPart:
    seq: int
    total: int
    text: str
    received_at: float
    carrier: str
    source: str
    destination: str


# A stored reply reads back exactly as it was written.
MoRecord = NewMo


@dataclass(frozen=True, slots=True)
class MoCounts:
    total: int
    unknown_channel: int
    unsubscribe: int
    incomplete: int


@dataclass(frozen=True, slots=True)
class StateCount:
    """Rows in one state (of one kind, for the outbox)."""

    state: str
    count: int
    kind: str = ""


@dataclass(frozen=True, slots=True)
class DeadPush:
    id: int
    kind: str
    ref_id: str
    url: str
    attempts: int
    created_at: float
    last_error: str | None


@dataclass(frozen=True, slots=True)
class MessageReceipt:
    """A receipt matched to one of a message's segments (operator console)."""

    seq: int
    received_at: float
    outcome: str
    receipt_json: str


@dataclass(frozen=True, slots=True)
class PushRecord:
    """One push row of a message or reply, for the operator console."""

    id: int
    kind: str
    state: str
    attempts: int
    created_at: float
    acked_at: float | None
    last_error: str | None


@dataclass(frozen=True, slots=True)
class ReportCopy:
    """The report queued for a message, exactly as it was (or will be) pushed."""

    url: str
    payload: str


@dataclass(frozen=True, slots=True)
class ExportRow:
    message_id: str
    recipient: str
    carrier: str | None
    channel: str
    segments: int
    submit_time: float | None
    created_at: float
    state: str
    status: str | None
    org_code: str | None
    report_state: str


@dataclass(frozen=True, slots=True)
class PruneCounts:
    """Rows removed by one retention pass."""

    messages: int = 0
    segments: int = 0
    receipts: int = 0
    mo: int = 0
    pushes: int = 0

    @property
    def total(self) -> int:
        return self.messages + self.segments + self.receipts + self.mo + self.pushes


@dataclass(frozen=True, slots=True)
class SlotLease:
    """One of a carrier's configured binds as a cluster-wide slot: who holds it, until when.

    ``node`` is None for a slot nobody holds; a lease whose ``lease_until`` has passed is
    free to take, whoever it names.
    """

    carrier: str
    slot: int
    node: str | None
    lease_until: float

    def held_by(self, node: str, now: float) -> bool:
        return self.node == node and self.lease_until > now

    def free(self, now: float) -> bool:
        return self.node is None or self.lease_until <= now


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A cluster member as it last reported itself (``binds`` is its JSON bind list)."""

    name: str
    started_at: float
    heartbeat_at: float
    api: str
    binds: str


@dataclass(frozen=True, slots=True)
class ClusterView:
    """The cluster as one heartbeat transaction saw it: live members (sorted) and the slots.

    ``sharing``: the live members that beat within a lease period, among whom the slots
    are shared (one that missed that many beats has lost its leases, even if still live).
    """

    now: float
    live: tuple[str, ...]
    slots: tuple[SlotLease, ...]
    sharing: tuple[str, ...] = ()

    def leader(self) -> str | None:
        """The member that runs the once-per-cluster jobs: the lowest live name."""
        return self.live[0] if self.live else None


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """What a member writes each beat; ``lease_until`` is where its held leases move to.

    ``live_after``: a member whose last heartbeat is older is dead; ``share_after``: one
    whose last heartbeat is older gets no share of the slots.
    """

    node: str
    now: float
    started_at: float
    lease_until: float
    live_after: float
    api: str = ""
    binds: str = "[]"
    share_after: float | None = None


@fast_init
@dataclass(frozen=True, slots=True)
class AdmissionQuery:
    """What to read, under the recipients' locks, before a request's messages are decided.

    ``numbers``: every recipient (locked, and looked up in ``channel``'s blacklist);
    ``counted``: those whose counted sends since ``since`` the frequency limits need.
    """

    channel: str
    numbers: tuple[str, ...]
    counted: tuple[str, ...]
    since: float


@fast_init
@dataclass(frozen=True, slots=True)
class AdmissionFacts:
    """The store's answers to an :class:`AdmissionQuery`, as of inside the transaction."""

    blacklisted: frozenset[str]
    history: tuple[RecentSend, ...]
