"""What an SMSC's answer means for the segment or the bind: one table, no branches elsewhere.

Throttling answers pause the bind and are not the segment's fault; transient errors are
retried a bounded number of times; anything else non-zero is a permanent failure whose
status is kept for the report. Bind answers split into bad credentials (alert, slow
retry) and everything else (normal reconnect backoff).
"""

from __future__ import annotations

import enum

from smpplib import consts

__all__ = [
    "BIND_CREDENTIALS",
    "NO_RESPONSE",
    "UNENCODABLE",
    "THROTTLING",
    "TRANSIENT",
    "BindVerdict",
    "SubmitVerdict",
    "classify_bind",
    "classify_submit",
    "status_name",
]

#: ``SubmitOutcome.command_status`` of a segment the SMSC never answered.
NO_RESPONSE = -1
#: ``SubmitOutcome.command_status`` of a segment that cannot be written as a submit_sm.
UNENCODABLE = -2

THROTTLING = frozenset({consts.SMPP_ESME_RTHROTTLED, consts.SMPP_ESME_RMSGQFUL})
TRANSIENT = frozenset({
    consts.SMPP_ESME_RSYSERR,
    consts.SMPP_ESME_RSUBMITFAIL,
    consts.SMPP_ESME_RX_T_APPN,
    consts.SMPP_ESME_RINVBNDSTS,  # the SMSC thinks we are not bound: retry after rebind
})
# ESME_RBINDFAIL is not here: SMSCs answer it for a full bind limit or a passing refusal,
# which the normal capped backoff retries; only a wrong password or system_id waits long.
BIND_CREDENTIALS = frozenset({
    consts.SMPP_ESME_RINVPASWD,
    consts.SMPP_ESME_RINVSYSID,
})

_NAMES: dict[int, str] = {}
for _name in dir(consts):
    if _name.startswith("SMPP_ESME_R"):
        _NAMES.setdefault(getattr(consts, _name), _name[len("SMPP_"):])
_NAMES[NO_RESPONSE] = "NO_RESPONSE"
_NAMES[UNENCODABLE] = "UNENCODABLE"


class SubmitVerdict(enum.Enum):
    ACCEPTED = "accepted"
    THROTTLED = "throttled"
    TRANSIENT = "transient"
    PERMANENT = "permanent"


class BindVerdict(enum.Enum):
    CREDENTIALS = "credentials"
    TRANSIENT = "transient"


def classify_submit(status: int, *, nacked: bool = False) -> SubmitVerdict:
    """Verdict for a submit_sm answer; a generic_nack is transient whatever it carries."""
    if nacked:
        return SubmitVerdict.TRANSIENT
    if status == 0:
        return SubmitVerdict.ACCEPTED
    if status in THROTTLING:
        return SubmitVerdict.THROTTLED
    if status in TRANSIENT:
        return SubmitVerdict.TRANSIENT
    return SubmitVerdict.PERMANENT


def classify_bind(status: int | None) -> BindVerdict:
    if status in BIND_CREDENTIALS:
        return BindVerdict.CREDENTIALS
    return BindVerdict.TRANSIENT


def status_name(status: int | None) -> str:
    """``ESME_RTHROTTLED`` style name, or hex for vendor codes."""
    if status is None:
        return "none"
    return _NAMES.get(status, f"0x{status:08x}")
