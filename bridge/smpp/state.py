"""The bind lifecycle as an explicit state enum plus a ``{(state, event): state}`` table.

Every move goes through :meth:`BindStateMachine.fire`, which logs
``bind.state_changed`` and raises on a move the table does not allow, so an
impossible sequence of network events shows up as a bug instead of a silent hang.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from structlog.typing import FilteringBoundLogger

__all__ = ["TRANSITIONS", "BindEvent", "BindState", "BindStateMachine", "IllegalTransition"]


class BindState(enum.Enum):
    IDLE = "idle"              # configured, never started
    CONNECTING = "connecting"  # TCP (or TLS) connect in progress
    BINDING = "binding"        # connected, bind_* sent, awaiting bind_*_resp
    BOUND = "bound"            # submitting and/or receiving
    DRAINING = "draining"      # stopping: no new submits, waiting for in-flight answers
    UNBINDING = "unbinding"    # stopping: unbind sent, awaiting unbind_resp
    CLOSING = "closing"        # stopping: connection being closed
    WAITING = "waiting"        # connection lost or refused; reconnect timer running
    STOPPED = "stopped"

    @property
    def stopping(self) -> bool:
        return self in (BindState.DRAINING, BindState.UNBINDING, BindState.CLOSING)


class BindEvent(enum.Enum):
    START = "start"
    CONNECTED = "connected"
    CONNECT_FAILED = "connect_failed"
    BOUND = "bound"
    LOST = "lost"              # connection closed, for whatever reason
    RETRY = "retry"            # reconnect timer fired
    STOP = "stop"
    DRAINED = "drained"        # no submit in flight (or drain deadline passed)


S, E = BindState, BindEvent
TRANSITIONS: dict[tuple[BindState, BindEvent], BindState] = {
    (S.IDLE, E.START): S.CONNECTING,
    (S.STOPPED, E.START): S.CONNECTING,
    (S.CONNECTING, E.CONNECTED): S.BINDING,
    (S.CONNECTING, E.CONNECT_FAILED): S.WAITING,
    (S.CONNECTING, E.STOP): S.STOPPED,
    (S.BINDING, E.BOUND): S.BOUND,
    (S.BINDING, E.LOST): S.WAITING,
    (S.BINDING, E.STOP): S.CLOSING,
    (S.BOUND, E.LOST): S.WAITING,
    (S.BOUND, E.STOP): S.DRAINING,
    (S.DRAINING, E.DRAINED): S.UNBINDING,
    (S.DRAINING, E.LOST): S.STOPPED,
    (S.UNBINDING, E.LOST): S.STOPPED,
    (S.CLOSING, E.LOST): S.STOPPED,
    (S.WAITING, E.RETRY): S.CONNECTING,
    (S.WAITING, E.STOP): S.STOPPED,
    (S.IDLE, E.STOP): S.STOPPED,
    (S.STOPPED, E.STOP): S.STOPPED,
}
del S, E


class IllegalTransition(RuntimeError):
    """An event the current state cannot take: a bug in the bind logic."""


class BindStateMachine:
    """Current state, the time it was entered, and the table-driven move."""

    __slots__ = ("_clock", "_log", "since", "state")

    def __init__(self, clock_seconds: Callable[[], float], log: FilteringBoundLogger) -> None:
        self._clock = clock_seconds
        self._log = log
        self.state = BindState.IDLE
        self.since = clock_seconds()

    def can(self, event: BindEvent) -> bool:
        return (self.state, event) in TRANSITIONS

    def fire(self, event: BindEvent, **context: object) -> BindState:
        try:
            new = TRANSITIONS[(self.state, event)]
        except KeyError:
            raise IllegalTransition(f"{event.value} in state {self.state.value}") from None
        if new is not self.state:
            self._log.info("bind.state_changed", old=self.state.value, new=new.value,
                           trigger=event.value, **context)
            self.state = new
            self.since = self._clock()
        return new
