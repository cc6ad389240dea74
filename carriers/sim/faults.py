"""Fault modes a tester switches on at run time through the control API.

Persistent modes change how a carrier answers from now on (``no_response``,
``nack``, ``slow``, ``refuse_binds``; ``none`` clears). ``drop`` and ``unbind`` are
one-shot actions on the sessions open right now and leave the mode as it was.
"""

from __future__ import annotations

from dataclasses import dataclass

from smpplib import consts

__all__ = ["ACTIONS", "MODES", "Fault", "FaultError", "parse_fault"]

MODES = ("none", "no_response", "nack", "slow", "refuse_binds")
ACTIONS = ("drop", "unbind")


class FaultError(ValueError):
    """A fault request that cannot be applied; the message names the field."""


@dataclass(frozen=True, slots=True)
class Fault:
    """One carrier's fault: ``mode`` plus the parameters that mode uses."""

    mode: str = "none"
    latency_ms: tuple[int, int] = (0, 0)
    status: int = 0
    # slow only: schedule the receipt at accept time, so it can overtake the late
    # submit_sm_resp (real SMSCs do this; the bridge must still match it).
    receipts_first: bool = False

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {"mode": self.mode}
        if self.mode == "slow":
            out["latency_ms"] = list(self.latency_ms)
            out["receipts_first"] = self.receipts_first
        if self.mode in ("nack", "refuse_binds"):
            out["status"] = self.status
        return out


NO_FAULT = Fault()
_DEFAULT_STATUS = {"nack": consts.SMPP_ESME_RSYSERR, "refuse_binds": consts.SMPP_ESME_RBINDFAIL}


def _status(value: object, mode: str) -> int:
    if value is None:
        return _DEFAULT_STATUS[mode]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 0xFFFFFFFF:
        raise FaultError(f"status: expected a non-zero SMPP command_status, got {value!r}")
    return value


def _latency(value: object) -> tuple[int, int]:
    if value is None:
        return (500, 2000)
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return (int(value), int(value))
    if (isinstance(value, list) and len(value) == 2
            and all(isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in value)
            and value[0] <= value[1]):
        return (int(value[0]), int(value[1]))
    raise FaultError(f"latency_ms: expected milliseconds or [min, max], got {value!r}")


def parse_fault(mode: object, latency_ms: object = None, status: object = None,
                receipts_first: object = None) -> Fault:
    """A :class:`Fault` for a persistent ``mode`` (actions are handled by the caller)."""
    if mode not in MODES:
        raise FaultError(f"mode: expected one of {', '.join(MODES + ACTIONS)}, got {mode!r}")
    if receipts_first is not None and not isinstance(receipts_first, bool):
        raise FaultError(f"receipts_first: expected true or false, got {receipts_first!r}")
    if mode == "slow":
        return Fault("slow", latency_ms=_latency(latency_ms), receipts_first=bool(receipts_first))
    if mode in _DEFAULT_STATUS:
        return Fault(str(mode), status=_status(status, str(mode)))
    return Fault(str(mode))
