"""The SMPP 3.4 server of one simulated carrier: sessions, binds, submits, receipts.

:class:`CarrierSmsc` is the account-wide state shared by every session of one
carrier (bind limit, TPS bucket, outcome engine, deliver_sm queue, fault mode) and
the Twisted factory; :class:`SmscSession` is one TCP connection. Framing, decoding
and generic_nack for malformed frames come from ``SmppFramedProtocol``. Time comes
from the injected ``clock`` only, so tests drive every timer with ``task.Clock``.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, fields

import structlog
from smpplib import consts
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import ServerFactory
from twisted.python.failure import Failure

from bridge.encoder import ConcatRefCounter
from bridge.smpp.codec import DecodeError, Pdu
from bridge.smpp.framing import SmppFramedProtocol
from carriers.profiles import format_message_id
from carriers.sim.config import CarrierSimConfig
from carriers.sim.delivery import DeliveryQueue
from carriers.sim.faults import NO_FAULT, Fault
from carriers.sim.limits import TokenBucket
from carriers.sim.mo import MoRequest, build_mo
from carriers.sim.numbers import valid_destination
from carriers.sim.outcomes import Outcome, OutcomeEngine, receipt_requested
from carriers.sim.receipts import AcceptedSubmit, build_receipt
from carriers.sim.submits import DecodedText, SubmitLog, SubmitRecord, decode_text

__all__ = ["CarrierCounters", "CarrierSmsc", "NoReceiverError", "SessionState", "SmscSession", "mask"]

log = structlog.get_logger("carriers.sim.smsc")


def mask(number: str) -> str:
    """A phone number fit for info-level logs: only the last four digits."""
    return "*" * max(0, len(number) - 4) + number[-4:]


class NoReceiverError(RuntimeError):
    """MO injection while no receiver or transceiver of the carrier is bound."""


class SessionState(enum.Enum):
    OPEN = "open"
    BOUND_TX = "transmitter"
    BOUND_RX = "receiver"
    BOUND_TRX = "transceiver"
    UNBINDING = "unbinding"
    CLOSED = "closed"


_BIND_STATES = {
    "bind_transmitter": SessionState.BOUND_TX,
    "bind_receiver": SessionState.BOUND_RX,
    "bind_transceiver": SessionState.BOUND_TRX,
}
_CAN_SUBMIT = frozenset({SessionState.BOUND_TX, SessionState.BOUND_TRX})
_CAN_RECEIVE = frozenset({SessionState.BOUND_RX, SessionState.BOUND_TRX})
_BOUND = frozenset({SessionState.BOUND_TX, SessionState.BOUND_RX, SessionState.BOUND_TRX})


@dataclass(slots=True)
class CarrierCounters:
    """What ``GET /stats`` reports per carrier (besides binds and deliveries)."""

    connections: int = 0
    bind_attempts: int = 0
    bind_failures: int = 0
    submits: int = 0
    accepted: int = 0
    throttled: int = 0
    window_full: int = 0
    invalid_destination: int = 0
    wrong_state: int = 0
    unanswered: int = 0
    nacks: int = 0
    malformed: int = 0
    dropped_connections: int = 0
    receipts_skipped: int = 0

    def as_json(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class SmscSession(SmppFramedProtocol):
    """One ESME connection to a simulated SMSC."""

    def __init__(self, smsc: CarrierSmsc, session_id: int) -> None:
        super().__init__()
        self.smsc = smsc
        self.session_id = session_id
        self.state = SessionState.OPEN
        self.system_id: str | None = None
        self._clock = smsc.clock
        self._log = log.bind(carrier=smsc.id, session=session_id)
        self._answers: dict[int, IDelayedCall] = {}
        self._init_timer: IDelayedCall | None = None
        self._enquire_timer: IDelayedCall | None = None
        self._unbind_timer: IDelayedCall | None = None
        self.handlers.update({
            "bind_transmitter": self._on_bind,
            "bind_receiver": self._on_bind,
            "bind_transceiver": self._on_bind,
            "submit_sm": self._on_submit,
            "deliver_sm_resp": self._on_deliver_sm_resp,
            "generic_nack": self._on_generic_nack,
            "enquire_link": self._on_enquire_link,
            "enquire_link_resp": self._ignore,
            "unbind": self._on_unbind,
            "unbind_resp": self._on_unbind_resp,
        })

    # -- state -------------------------------------------------------------------
    @property
    def bound(self) -> bool:
        return self.state in _BOUND

    @property
    def can_receive(self) -> bool:
        return self.state in _CAN_RECEIVE

    @property
    def unanswered(self) -> int:
        """Submits accepted but not yet answered (only the ``slow`` fault delays answers)."""
        return len(self._answers)

    # -- connection ----------------------------------------------------------------
    def connectionMade(self) -> None:  # noqa: N802 (Twisted API)
        super().connectionMade()
        self.smsc.session_opened(self)
        if self.smsc.config.session_init_s > 0:
            self._init_timer = self._clock.callLater(self.smsc.config.session_init_s, self._init_expired)

    def connectionLost(self, reason: Failure | None = None) -> None:  # noqa: N802 (Twisted API)
        was = self.state
        self.state = SessionState.CLOSED
        for timer in (self._init_timer, self._enquire_timer, self._unbind_timer, *self._answers.values()):
            if timer is not None and timer.active():
                timer.cancel()
        self._answers.clear()
        self.smsc.session_closed(self)
        self._log.info("sim.disconnected", state=was.value)

    def drop(self) -> None:
        """Fault ``drop``: close the TCP connection without any SMPP goodbye."""
        self._log.info("sim.drop")
        self.transport.abortConnection()

    def send_pdu(self, pdu: Pdu) -> None:
        if pdu.command == "generic_nack":
            self.smsc.counters.nacks += 1
        super().send_pdu(pdu)

    def undecodable_pdu(self, exc: DecodeError) -> None:
        self.smsc.counters.malformed += 1
        super().undecodable_pdu(exc)

    def _unframeable(self, length: int) -> None:
        self.smsc.counters.malformed += 1
        super()._unframeable(length)

    def _init_expired(self) -> None:
        self._init_timer = None
        if self.state is SessionState.OPEN:
            self._log.info("sim.session_init_timeout")
            self.transport.loseConnection()

    # -- binds ---------------------------------------------------------------------
    def _on_bind(self, pdu: Pdu) -> None:
        smsc = self.smsc
        smsc.counters.bind_attempts += 1
        if self.state is not SessionState.OPEN:
            status = consts.SMPP_ESME_RALYBND
        else:
            status = smsc.check_bind(str(pdu.get("system_id", "")), str(pdu.get("password", "")))
        if status:
            smsc.counters.bind_failures += 1
            self._log.info("sim.bind_refused", command=pdu.command, status=status)
            self.respond(pdu, status, system_id=smsc.config.system_id)
            return
        self.state = _BIND_STATES[pdu.command]
        self.system_id = str(pdu.get("system_id"))
        self._log = self._log.bind(system_id=self.system_id, bind_type=self.state.value)
        if self._init_timer is not None and self._init_timer.active():
            self._init_timer.cancel()
        self._init_timer = None
        self.respond(pdu, 0, system_id=smsc.config.system_id, sc_interface_version=0x34)
        self._log.info("sim.bind")
        smsc.session_bound(self)
        self._schedule_enquire_link()

    def _on_unbind(self, pdu: Pdu) -> None:
        self.respond(pdu, 0 if self.bound or self.state is SessionState.UNBINDING else consts.SMPP_ESME_RINVBNDSTS)
        self._log.info("sim.unbind", by="esme")
        self.smsc.session_unbound(self)
        self.state = SessionState.CLOSED
        self.transport.loseConnection()

    def unbind(self) -> None:
        """Server-initiated unbind: stop delivering, send unbind, close on the answer."""
        if not self.bound:
            self.transport.loseConnection()
            return
        self._log.info("sim.unbind", by="smsc")
        self.smsc.session_unbound(self)
        self.state = SessionState.UNBINDING
        self.request("unbind")
        self._unbind_timer = self._clock.callLater(
            self.smsc.config.delivery.response_timeout_s, self.transport.loseConnection)

    def _on_unbind_resp(self, pdu: Pdu) -> None:
        if self.state is SessionState.UNBINDING:
            self.transport.loseConnection()

    # -- keepalive -------------------------------------------------------------------
    def _on_enquire_link(self, pdu: Pdu) -> None:
        self.respond(pdu)

    def _ignore(self, pdu: Pdu) -> None:
        pass

    def _schedule_enquire_link(self) -> None:
        interval = self.smsc.config.enquire_link_s
        if interval > 0:
            self._enquire_timer = self._clock.callLater(interval, self._send_enquire_link)

    def _send_enquire_link(self) -> None:
        self._enquire_timer = None
        if self.bound:
            self.request("enquire_link")
            self._schedule_enquire_link()

    # -- submits ---------------------------------------------------------------------
    def _on_submit(self, pdu: Pdu) -> None:
        if self.state not in _CAN_SUBMIT:
            self.smsc.counters.wrong_state += 1
            self.respond(pdu, consts.SMPP_ESME_RINVBNDSTS)
            return
        self.smsc.handle_submit(self, pdu)

    def answer_later(self, pdu: Pdu, message_id: str, delay_s: float,
                     then: AcceptedSubmit | None) -> None:
        """Fault ``slow``: answer after ``delay_s``; the answer counts against the window.

        ``then`` is the submit whose receipt is scheduled once answered (None: already done).
        """
        key = pdu.sequence
        while key in self._answers:  # an ESME reusing a sequence number still gets two answers
            key += 0x100000000

        def answer() -> None:
            self._answers.pop(key, None)
            self.respond(pdu, 0, message_id=message_id)
            if then is not None:
                self.smsc.after_accept(then, pdu.get("registered_delivery", 0))

        self._answers[key] = self._clock.callLater(delay_s, answer)

    # -- deliveries ------------------------------------------------------------------
    def send_deliver(self, template: Pdu) -> int:
        return self.request(template.command, **template.fields).sequence

    def _on_deliver_sm_resp(self, pdu: Pdu) -> None:
        self.smsc.deliveries.acknowledge(self, pdu.sequence, pdu.status)

    def _on_generic_nack(self, pdu: Pdu) -> None:
        # An ESME that cannot read our deliver_sm nacks it: that is an error answer.
        self.smsc.deliveries.acknowledge(self, pdu.sequence, pdu.status or consts.SMPP_ESME_RSYSERR)


class CarrierSmsc(ServerFactory):
    """Account-wide state of one carrier, and the factory of its sessions."""

    def __init__(self, config: CarrierSimConfig, clock: IReactorTime, submits: SubmitLog) -> None:
        self.config = config
        self.clock = clock
        self.submits = submits
        self.id = config.id
        self.profile = config.profile
        self.counters = CarrierCounters()
        self.fault: Fault = NO_FAULT
        self.sessions: set[SmscSession] = set()
        self.engine = OutcomeEngine(config)
        self.bucket = TokenBucket(config.tps, clock)
        self.deliveries = DeliveryQueue(clock, config.delivery, config.window, carrier=self.id)
        self.mo_refs = ConcatRefCounter(start=int(clock.seconds()) % 256)
        self._fault_rng = random.Random(config.seed + 1)
        self._session_ids = 0
        self._receipt_timers: dict[int, IDelayedCall] = {}
        start = config.message_id_start
        # Clock-derived start: ids stay unique across restarts of the simulator.
        self._next_number = start if start is not None else int(clock.seconds() * 1000) * 1000 + 1
        self._log = log.bind(carrier=self.id)

    # -- factory ---------------------------------------------------------------------
    def buildProtocol(self, addr: object) -> SmscSession:  # noqa: N802 (Twisted API)
        self._session_ids += 1
        session = SmscSession(self, self._session_ids)
        session.factory = self
        return session

    # -- sessions ----------------------------------------------------------------------
    def session_opened(self, session: SmscSession) -> None:
        self.counters.connections += 1
        self.sessions.add(session)

    def session_bound(self, session: SmscSession) -> None:
        if session.can_receive:
            self.deliveries.add_sink(session)

    def session_unbound(self, session: SmscSession) -> None:
        self.deliveries.remove_sink(session)

    def session_closed(self, session: SmscSession) -> None:
        self.sessions.discard(session)
        self.deliveries.remove_sink(session)

    def bound_sessions(self) -> list[SmscSession]:
        return [s for s in self.sessions if s.bound]

    def binds_by_type(self) -> dict[str, int]:
        counts = {"transmitter": 0, "receiver": 0, "transceiver": 0}
        for s in self.bound_sessions():
            counts[s.state.value] += 1
        return counts

    def check_bind(self, system_id: str, password: str) -> int:
        """0, or the bind_*_resp status refusing this bind."""
        if self.fault.mode == "refuse_binds":
            return self.fault.status
        if system_id != self.config.system_id:
            return consts.SMPP_ESME_RINVSYSID
        if password != self.config.password:
            return consts.SMPP_ESME_RINVPASWD
        if len(self.bound_sessions()) >= self.config.max_binds:
            return consts.SMPP_ESME_RBINDFAIL
        return 0

    # -- submits -------------------------------------------------------------------------
    def _record(self, session: SmscSession, pdu: Pdu, decoded: DecodedText,
                status: int | None, message_id: str | None = None) -> None:
        self.submits.append(SubmitRecord(
            index=self.submits.next_index(),
            carrier=self.id,
            system_id=session.system_id or "",
            source_addr=str(pdu.get("source_addr", "")),
            destination_addr=str(pdu.get("destination_addr", "")),
            data_coding=int(pdu.get("data_coding", 0)),
            esm_class=int(pdu.get("esm_class", 0)),
            registered_delivery=int(pdu.get("registered_delivery", 0)),
            decoded=decoded,
            message_id=message_id,
            status=status,
            time=self.clock.seconds(),
        ))

    def _refuse(self, session: SmscSession, pdu: Pdu, decoded: DecodedText, status: int) -> None:
        self._record(session, pdu, decoded, status)
        session.respond(pdu, status)

    def handle_submit(self, session: SmscSession, pdu: Pdu) -> None:
        """Answer one submit_sm from a bound transmitter or transceiver."""
        counters = self.counters
        counters.submits += 1
        decoded = decode_text(pdu, self.profile.data_coding_0)
        fault = self.fault
        if fault.mode == "no_response":
            counters.unanswered += 1
            self._record(session, pdu, decoded, None)
            return
        if fault.mode == "nack":
            self._record(session, pdu, decoded, None)
            session.send_pdu(Pdu("generic_nack", pdu.sequence, fault.status))
            return
        if session.unanswered >= self.config.window:
            counters.window_full += 1
            self._refuse(session, pdu, decoded, consts.SMPP_ESME_RMSGQFUL)
            return
        if not self.bucket.take():
            counters.throttled += 1
            self._refuse(session, pdu, decoded, consts.SMPP_ESME_RTHROTTLED)
            return
        destination = str(pdu.get("destination_addr", ""))
        if not valid_destination(destination, self.profile, self.config.numbering):
            counters.invalid_destination += 1
            self._refuse(session, pdu, decoded, consts.SMPP_ESME_RINVDSTADR)
            return
        number = self._next_number
        self._next_number += 1
        message_id = format_message_id(self.profile.message_id_dialect, number)
        counters.accepted += 1
        self._record(session, pdu, decoded, 0, message_id)
        accepted = AcceptedSubmit(
            message_number=number,
            source_addr=str(pdu.get("source_addr", "")),
            source_addr_ton=int(pdu.get("source_addr_ton", 0)),
            source_addr_npi=int(pdu.get("source_addr_npi", 0)),
            destination_addr=destination,
            dest_addr_ton=int(pdu.get("dest_addr_ton", 0)),
            dest_addr_npi=int(pdu.get("dest_addr_npi", 0)),
            submitted_at=self.clock.seconds(),
            text=decoded.text,
        )
        self._log.debug("sim.submit", session=session.session_id, message_id=message_id,
                        to=mask(destination))
        if fault.mode == "slow":
            lo, hi = fault.latency_ms
            delay_ms = lo if lo == hi else self._fault_rng.randint(lo, hi)
            if fault.receipts_first:
                self.after_accept(accepted, int(pdu.get("registered_delivery", 0)))
                session.answer_later(pdu, message_id, delay_ms / 1000.0, None)
            else:
                session.answer_later(pdu, message_id, delay_ms / 1000.0, accepted)
            return
        session.respond(pdu, 0, message_id=message_id)
        self.after_accept(accepted, int(pdu.get("registered_delivery", 0)))

    def after_accept(self, accepted: AcceptedSubmit, registered_delivery: int) -> None:
        """Decide the outcome and schedule its receipt if the ESME asked for one."""
        outcome = self.engine.decide(accepted.destination_addr)
        if not receipt_requested(registered_delivery, outcome.stat):
            self.counters.receipts_skipped += 1
            return
        key = accepted.message_number
        self._receipt_timers[key] = self.clock.callLater(
            outcome.delay_ms / 1000.0, self._emit_receipt, accepted, outcome)

    def _emit_receipt(self, accepted: AcceptedSubmit, outcome: Outcome) -> None:
        self._receipt_timers.pop(accepted.message_number, None)
        assert outcome.stat is not None
        pdu = build_receipt(self.profile, accepted, outcome.stat, outcome.err,
                            self.clock.seconds(), self.config.utc_offset_h)
        self.deliveries.enqueue(pdu, "receipt")

    # -- MO ---------------------------------------------------------------------------------
    def inject_mo(self, request: MoRequest) -> int:
        """Queue an MO (one deliver_sm per segment); returns the number of segments.

        Raises :class:`NoReceiverError` when nobody could receive it now, and
        ``MoError`` for a request that cannot be encoded.
        """
        pdus = build_mo(self.profile, request, self.mo_refs)
        if not self.deliveries.has_receiver:
            raise NoReceiverError(f"no receiver or transceiver is bound to {self.id}")
        for pdu in pdus:
            self.deliveries.enqueue(pdu, "mo")
        self._log.info("sim.mo", segments=len(pdus), to=request.destination, frm=mask(request.source))
        return len(pdus)

    # -- faults -------------------------------------------------------------------------------
    def set_fault(self, fault: Fault) -> None:
        self.fault = fault
        self._log.info("sim.fault", **fault.as_json())

    def drop_connections(self) -> int:
        sessions = list(self.sessions)
        for s in sessions:
            s.drop()
        self.counters.dropped_connections += len(sessions)
        return len(sessions)

    def unbind_all(self) -> int:
        sessions = self.bound_sessions()
        for s in sessions:
            s.unbind()
        return len(sessions)

    # -- control ------------------------------------------------------------------------------
    def reset(self) -> None:
        """Zero counters, forget pending receipts and faults; binds stay up."""
        for timer in self._receipt_timers.values():
            if timer.active():
                timer.cancel()
        self._receipt_timers.clear()
        self.deliveries.clear()
        self.counters = CarrierCounters()
        self.fault = NO_FAULT
        self.engine.reset()
        self.bucket.reset()
        self._fault_rng = random.Random(self.config.seed + 1)

    def stats(self) -> dict[str, object]:
        receipts = self.deliveries.counters["receipt"]
        mo = self.deliveries.counters["mo"]
        return {
            "binds": self.binds_by_type(),
            "open_connections": len(self.sessions),
            **self.counters.as_json(),
            "receipts_scheduled": len(self._receipt_timers),
            "receipts_sent": receipts.sent,
            "receipts_acked": receipts.acked,
            "receipts_pending": self.deliveries.pending_of("receipt") + len(self._receipt_timers),
            "receipts_failed": receipts.failed,
            "mo_sent": mo.sent,
            "mo_acked": mo.acked,
            "mo_pending": self.deliveries.pending_of("mo"),
            "deliveries": {"receipt": receipts.as_json(), "mo": mo.as_json()},
            "fault": self.fault.as_json(),
        }
