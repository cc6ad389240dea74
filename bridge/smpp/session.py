"""One ESME-side SMPP session (one TCP connection): bind, submit window, keepalive, inbound.

The session knows the wire and its timers, nothing about queues or reconnects: it
reports to its owner (a :class:`~bridge.smpp.bind.Bind`) through
:class:`SessionOwner`. Submit answers are collected while a chunk of bytes is
processed and handed over once per ``dataReceived``, so the owner can hand the
pipeline one batch to group-commit and refill the window in one write.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from smpplib import consts
from smpplib import exceptions as smpplib_exceptions
from twisted.internet.defer import Deferred, fail
from twisted.python.failure import Failure

from bridge.fastinit import fast_init
from bridge.smpp.codec import DecodeError, Pdu, encode
from bridge.smpp.framing import SmppFramedProtocol
from bridge.smpp.pdus import bind_fields, submit_fields
from bridge.smpp.status import status_name
from bridge.smpp.window import TransactionTable

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger
    from twisted.internet.interfaces import IDelayedCall, IReactorTime

    from bridge.smpp.config import BindConfig
    from bridge.smpp.queue import QueueEntry

__all__ = ["EsmeSession", "SessionOwner", "SubmitAnswer"]

_BIND_RESPONSES = ("bind_transmitter_resp", "bind_receiver_resp", "bind_transceiver_resp")


@fast_init
@dataclass(frozen=True, slots=True)
class SubmitAnswer:
    """The SMSC's answer to one submit_sm (a submit_sm_resp or a generic_nack)."""

    entry: QueueEntry
    status: int
    message_id: str | None
    nacked: bool
    sent_at: float


class SessionOwner(Protocol):
    def session_connected(self, session: EsmeSession) -> None: ...
    def session_bound(self, session: EsmeSession, system_id: str) -> None: ...
    def session_bind_refused(self, session: EsmeSession, status: int) -> None: ...
    def session_answers(self, session: EsmeSession, answers: list[SubmitAnswer]) -> None: ...
    def session_deliver(self, session: EsmeSession, pdu: Pdu) -> Deferred[int]: ...
    def session_error(self, session: EsmeSession, detail: str) -> None: ...
    def session_lost(self, session: EsmeSession, unanswered: list[QueueEntry],
                     timed_out: list[QueueEntry], reason: str) -> None: ...


class EsmeSession(SmppFramedProtocol):
    """The client side of one connection. Timers run on the injected clock."""

    def __init__(self, config: BindConfig, owner: SessionOwner, clock: IReactorTime,
                 log: FilteringBoundLogger) -> None:
        super().__init__()
        self.config = config
        self.log = log
        self._owner = owner
        self._clock = clock
        self.table = TransactionTable()
        self.bound = False
        self.closing = False
        self.lost = False
        self._answers: list[SubmitAnswer] = []
        self._timed_out: list[QueueEntry] = []
        self._deadline_call: IDelayedCall | None = None
        self._keepalive_call: IDelayedCall | None = None
        self._enquire_pending = False
        self._last_rx = clock.seconds()
        self._timeout_s = config.response_timeout_s
        self.handlers = {
            "bind_transmitter_resp": self._on_bind_resp,
            "bind_receiver_resp": self._on_bind_resp,
            "bind_transceiver_resp": self._on_bind_resp,
            "submit_sm_resp": self._on_submit_sm_resp,
            "deliver_sm": self._on_deliver_sm,
            "enquire_link": self._on_enquire_link,
            "enquire_link_resp": self._on_enquire_link_resp,
            "unbind": self._on_unbind,
            "unbind_resp": self._on_unbind_resp,
            "generic_nack": self._on_generic_nack,
            "alert_notification": self._on_alert_notification,
        }

    # -- state ---------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return self.table.submits

    @property
    def ready(self) -> bool:
        """Bound, and neither closing nor closed: submits may go out."""
        return self.bound and not self.closing and not self.lost

    # -- connection ----------------------------------------------------------

    def connectionMade(self) -> None:  # noqa: N802 (Twisted API)
        super().connectionMade()
        self._last_rx = self._clock.seconds()
        self._owner.session_connected(self)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted API)
        self._last_rx = self._clock.seconds()
        super().dataReceived(data)
        self._flush_answers()

    def connectionLost(self, reason: Failure | None = None) -> None:  # noqa: N802 (Twisted API)
        self._flush_answers()
        self.lost = True
        self.bound = False
        for call in (self._deadline_call, self._keepalive_call):
            if call is not None and call.active():
                call.cancel()
        self._deadline_call = self._keepalive_call = None
        unanswered = [t.payload for t in self.table.take_all() if t.command == "submit_sm"]
        why = reason.getErrorMessage() if reason is not None else "closed"
        self._owner.session_lost(self, unanswered, self._timed_out, why)

    def close(self) -> None:
        """Close after pending writes (unbind_resp, deliver_sm_resp) are flushed."""
        self.closing = True
        if self.transport is not None and not self.lost:
            self.transport.loseConnection()

    def abort(self) -> None:
        """Drop the connection now: the peer is not answering, buffered bytes are moot."""
        self.closing = True
        if self.transport is not None and not self.lost:
            self.transport.abortConnection()

    # -- requests we send ----------------------------------------------------

    def _send_request(self, command: str, fields: dict[str, object]) -> int:
        pdu = self.request(command, **fields)
        self.table.open(pdu.sequence, command, self._clock.seconds() + self._timeout_s)
        self._arm_deadline()
        return pdu.sequence

    def bind(self) -> None:
        self._send_request(f"bind_{self.config.bind_type}", bind_fields(self.config))

    def unbind(self) -> None:
        self.bound = False
        self._send_request("unbind", {})

    def submit(self, entries: list[QueueEntry]) -> list[tuple[QueueEntry, str]]:
        """Send ``entries`` as submit_sm in one write; return those that cannot be encoded."""
        now = self._clock.seconds()
        deadline = now + self._timeout_s
        service_type = self.config.service_type
        next_seq = self.sequences.next
        table_open = self.table.open
        chunks: list[bytes] = []
        rejected: list[tuple[QueueEntry, str]] = []
        for entry in entries:
            seq = next_seq()
            try:
                data = encode(Pdu("submit_sm", seq, 0, submit_fields(entry.segment, service_type)))
            except (ValueError, TypeError, OverflowError, struct.error,
                    smpplib_exceptions.PDUError) as exc:
                rejected.append((entry, f"{type(exc).__name__}: {exc}"))
                continue
            chunks.append(data)
            table_open(seq, "submit_sm", deadline, entry)
        if chunks:
            self.pdus_out += len(chunks)
            self.transport.write(b"".join(chunks))
            self._arm_deadline()
        return rejected

    # -- response deadlines: one timer for the oldest transaction --------------

    def _arm_deadline(self) -> None:
        if self._deadline_call is not None or self.lost:
            return
        oldest = self.table.oldest()
        if oldest is not None:
            delay = max(0.0, oldest.deadline - self._clock.seconds())
            self._deadline_call = self._clock.callLater(delay, self._on_deadline)

    def _on_deadline(self) -> None:
        self._deadline_call = None
        expired = self.table.expired(self._clock.seconds())
        if not expired:
            self._arm_deadline()
            return
        first = expired[0]
        self.log.warning("bind.response_timeout", command=first.command, seq=first.sequence,
                         expired=len(expired), timeout_s=self._timeout_s)
        self._timed_out = [t.payload for t in expired if t.command == "submit_sm"]
        self._owner.session_error(self, f"no {first.command}_resp within {self._timeout_s:g}s")
        self.abort()

    # -- keepalive: enquire_link after enquire_link_s without inbound traffic ---

    def _schedule_keepalive(self, at: float) -> None:
        delay = max(0.0, at - self._clock.seconds())
        self._keepalive_call = self._clock.callLater(delay, self._on_keepalive)

    def _on_keepalive(self) -> None:
        self._keepalive_call = None
        if not self.bound or self.lost:
            return
        now = self._clock.seconds()
        idle_until = self._last_rx + self.config.enquire_link_s
        if now >= idle_until and not self._enquire_pending:
            self._enquire_pending = True
            self._send_request("enquire_link", {})
            self._schedule_keepalive(now + self.config.enquire_link_s)
        else:
            self._schedule_keepalive(max(idle_until, now + 0.001))

    # -- PDUs from the SMSC ----------------------------------------------------

    def _flush_answers(self) -> None:
        if self._answers:
            answers, self._answers = self._answers, []
            self._owner.session_answers(self, answers)

    def _unexpected(self, pdu: Pdu) -> None:
        self.log.warning("pdu.unexpected_response", command=pdu.command, seq=pdu.sequence,
                         status=status_name(pdu.status))
        self._owner.session_error(self, f"unexpected {pdu.command} seq {pdu.sequence}")

    def _on_bind_resp(self, pdu: Pdu) -> None:
        txn = self.table.close(pdu.sequence)
        if txn is None or not txn.command.startswith("bind_"):
            self._unexpected(pdu)
            return
        if pdu.status != 0:
            self._bind_refused(pdu.status)
            return
        self.bound = True
        self._schedule_keepalive(self._last_rx + self.config.enquire_link_s)
        self._owner.session_bound(self, str(pdu.get("system_id") or ""))

    def _bind_refused(self, status: int) -> None:
        self._owner.session_bind_refused(self, status)
        self.close()

    def _on_submit_sm_resp(self, pdu: Pdu) -> None:
        txn = self.table.close(pdu.sequence)
        if txn is None or txn.command != "submit_sm":
            self._unexpected(pdu)
            return
        self._answers.append(SubmitAnswer(txn.payload, pdu.status, pdu.fields.get("message_id") or None,
                                          False, txn.deadline - self._timeout_s))

    def _on_generic_nack(self, pdu: Pdu) -> None:
        txn = self.table.close(pdu.sequence)
        self.log.warning("pdu.generic_nack", seq=pdu.sequence, status=status_name(pdu.status),
                         command=txn.command if txn else None)
        if txn is None:
            self._owner.session_error(self, f"generic_nack {status_name(pdu.status)} seq {pdu.sequence}")
        elif txn.command == "submit_sm":
            self._answers.append(SubmitAnswer(txn.payload, pdu.status, None, True,
                                              txn.deadline - self._timeout_s))
        elif txn.command.startswith("bind_"):
            self._bind_refused(pdu.status)
        elif txn.command == "enquire_link":
            self._enquire_pending = False  # an answer all the same: the peer is alive
        elif txn.command == "unbind":
            self.close()

    def _on_deliver_sm(self, pdu: Pdu) -> None:
        try:
            recorded = self._owner.session_deliver(self, pdu)
        except Exception:  # the callback broke its contract; the SMSC must redeliver
            recorded = fail(Failure())
        recorded.addCallbacks(self._deliver_recorded, self._deliver_failed,
                              callbackArgs=(pdu,), errbackArgs=(pdu,))

    def _deliver_recorded(self, status: int, pdu: Pdu) -> None:
        if not self.lost:
            self.respond(pdu, int(status))

    def _deliver_failed(self, failure: Failure, pdu: Pdu) -> None:
        self.log.warning("deliver.record_failed", seq=pdu.sequence, error=failure.getErrorMessage())
        self._owner.session_error(self, f"deliver_sm not recorded: {failure.getErrorMessage()}")
        if not self.lost:
            self.respond(pdu, consts.SMPP_ESME_RX_T_APPN)

    def _on_enquire_link(self, pdu: Pdu) -> None:
        self.respond(pdu)

    def _on_enquire_link_resp(self, pdu: Pdu) -> None:
        txn = self.table.close(pdu.sequence)
        if txn is None or txn.command != "enquire_link":
            self._unexpected(pdu)
            return
        self._enquire_pending = False

    def _on_unbind(self, pdu: Pdu) -> None:
        self.log.info("bind.unbind_received", in_flight=self.in_flight)
        self.bound = False
        self.respond(pdu)
        self.close()

    def _on_unbind_resp(self, pdu: Pdu) -> None:
        self.table.close(pdu.sequence)
        self.close()

    def _on_alert_notification(self, pdu: Pdu) -> None:
        self.log.debug("pdu.alert_notification", seq=pdu.sequence)

    # -- broken PDUs: framing answers them; we count them against the bind -----

    def undecodable_pdu(self, exc: DecodeError) -> None:
        self._owner.session_error(self, f"undecodable PDU: {exc.reason}")
        super().undecodable_pdu(exc)

    def unhandled_pdu(self, pdu: Pdu) -> None:
        self.log.warning("pdu.unsupported", command=pdu.command, seq=pdu.sequence)
        self._owner.session_error(self, f"unsupported {pdu.command}")
        super().unhandled_pdu(pdu)

    def _unframeable(self, length: int) -> None:
        self._owner.session_error(self, f"unframeable command_length {length}")
        super()._unframeable(length)
