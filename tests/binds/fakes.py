"""A scriptable in-memory SMSC and a loopback endpoint for deterministic bind tests.

No sockets, no real time: the bridge's sessions and this SMSC talk through
``twisted.test.iosim`` pumps, and every timer runs on one ``task.Clock``. The real
simulator is exercised separately in ``test_sim_*.py``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from smpplib import consts
from twisted.internet import task
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.test import iosim
from zope.interface import implementer

from bridge.smpp.codec import Pdu
from bridge.smpp.config import BindConfig, LinkPolicy
from bridge.smpp.framing import SmppFramedProtocol
from bridge.smpp.link import CarrierLink
from bridge.smpp.types import OutboundSegment, SubmitOutcome

__all__ = ["FakeSmsc", "Harness", "LoopbackEndpoint", "bind_config", "segments"]


class FakeSmsc:
    """State shared by every connection to the fake SMSC.

    ``answer(pdu)`` decides each submit_sm: an int status, or ``None`` to stay silent.
    """

    def __init__(self, clock: task.Clock, password: str = "pw") -> None:
        self.clock = clock
        self.password = password
        self.connections: list[FakeSmscProtocol] = []
        self.bind_attempts: list[tuple[float, str]] = []
        self.received: list[Pdu] = []          # every submit_sm seen, in arrival order
        self.accepted: list[Pdu] = []          # submit_sm answered 0
        self.held: list[tuple[FakeSmscProtocol, Pdu]] = []
        self.deliver_answers: list[int] = []
        self.answer: Callable[[Pdu], int | None] = lambda pdu: 0
        self.refuse_bind: int | None = None
        self.ids = itertools.count(1)
        self.max_outstanding = 0

    @property
    def live(self) -> list[FakeSmscProtocol]:
        return [c for c in self.connections if c.bound and not c.gone]

    def accepted_ids(self) -> list[int]:
        return [int(p.fields["short_message"]) for p in self.accepted]


class FakeSmscProtocol(SmppFramedProtocol):
    def __init__(self, smsc: FakeSmsc) -> None:
        super().__init__()
        self.smsc = smsc
        self.bound = False
        self.gone = False
        self.outstanding = 0
        self.deliver_results: dict[int, Deferred[int]] = {}
        self.handlers = {
            "bind_transmitter": self._bind,
            "bind_receiver": self._bind,
            "bind_transceiver": self._bind,
            "submit_sm": self._submit,
            "enquire_link": self.respond,
            "unbind": self._unbind,
            "deliver_sm_resp": self._deliver_resp,
            "enquire_link_resp": lambda pdu: None,
        }
        smsc.connections.append(self)

    def connectionLost(self, reason: object = None) -> None:  # noqa: N802
        self.gone = True

    def _bind(self, pdu: Pdu) -> None:
        self.smsc.bind_attempts.append((self.smsc.clock.seconds(), pdu.command))
        if self.smsc.refuse_bind is not None:
            self.respond(pdu, self.smsc.refuse_bind)
        elif pdu.fields.get("password") != self.smsc.password:
            self.respond(pdu, consts.SMPP_ESME_RINVPASWD)
        else:
            self.bound = True
            self.respond(pdu, system_id="FAKE")

    def _submit(self, pdu: Pdu) -> None:
        smsc = self.smsc
        smsc.received.append(pdu)
        self.outstanding += 1
        smsc.max_outstanding = max(smsc.max_outstanding, self.outstanding)
        status = smsc.answer(pdu)
        if status is None:
            smsc.held.append((self, pdu))
            return
        self.answer_submit(pdu, status)

    def answer_submit(self, pdu: Pdu, status: int) -> None:
        self.outstanding -= 1
        if status == 0:
            self.smsc.accepted.append(pdu)
            self.respond(pdu, 0, message_id=str(next(self.smsc.ids)))
        else:
            self.respond(pdu, status)

    def _unbind(self, pdu: Pdu) -> None:
        self.respond(pdu)
        self.transport.loseConnection()

    def _deliver_resp(self, pdu: Pdu) -> None:
        self.smsc.deliver_answers.append(pdu.status)

    def send_deliver(self, text: bytes = b"id:1 stat:DELIVRD", esm_class: int = 4) -> int:
        pdu = self.request("deliver_sm", source_addr="8613800138000", destination_addr="1069",
                           esm_class=esm_class, short_message=text)
        return pdu.sequence

    def send_raw(self, data: bytes) -> None:
        self.transport.write(data)


@implementer(IStreamClientEndpoint)
class LoopbackEndpoint:
    """Connects the bridge's factory to a new FakeSmscProtocol through an iosim pump."""

    def __init__(self, smsc: FakeSmsc, clock: task.Clock) -> None:
        self.smsc = smsc
        self.clock = clock
        self.pumps: list[iosim.IOPump] = []
        self.refuse = False
        self.attempts = 0

    def connect(self, factory: Factory) -> Deferred:
        self.attempts += 1
        if self.refuse:
            return fail(ConnectionRefusedError())
        client = factory.buildProtocol(None)
        server = FakeSmscProtocol(self.smsc)
        pump = iosim.connect(server, iosim.makeFakeServer(server), client,
                             iosim.makeFakeClient(client), greet=False, clock=self.clock)
        self.pumps.append(pump)
        return succeed(client)


def fired(d: Deferred) -> object:
    """What ``d`` has already fired with (a result or a Failure); fails the test if it has not."""
    out: list[object] = []
    d.addBoth(out.append)
    assert out, "Deferred has not fired"
    return out[0]


def bind_config(**overrides: object) -> BindConfig:
    values: dict[str, object] = {
        "carrier": "cmcc", "host": "127.0.0.1", "port": 2775, "system_id": "esme",
        "password": "pw", "window": 10, "response_timeout_s": 5.0, "enquire_link_s": 10.0,
        "reconnect_initial_s": 1.0, "reconnect_max_s": 30.0, "credentials_retry_s": 10.0,
        "throttle_initial_s": 0.5, "throttle_max_s": 4.0,
    }
    values.update(overrides)
    return BindConfig(**values)  # type: ignore[arg-type]


def segments(first: int, count: int, carrier: str = "cmcc") -> list[OutboundSegment]:
    """Segments whose short_message is their id, so the SMSC side can check order."""
    return [OutboundSegment(i, carrier, "1069", "+8613800138000", str(i).encode(), 0, 0)
            for i in range(first, first + count)]


@dataclass
class Harness:
    """A CarrierLink wired to a FakeSmsc, with helpers to move bytes and time."""

    clock: task.Clock
    smsc: FakeSmsc
    endpoint: LoopbackEndpoint
    link: CarrierLink
    outcomes: list[SubmitOutcome] = field(default_factory=list)
    batches: list[int] = field(default_factory=list)
    delivered: list[tuple[str, str, Pdu]] = field(default_factory=list)
    deliver_results: list[Deferred[int]] = field(default_factory=list)
    auto_deliver: bool = True

    @classmethod
    def build(cls, *configs: BindConfig, policy: LinkPolicy | None = None,
              password: str = "pw", leased: bool = False) -> Harness:
        import random

        clock = task.Clock()
        smsc = FakeSmsc(clock, password)
        endpoint = LoopbackEndpoint(smsc, clock)
        holder: dict[str, Harness] = {}

        def on_outcomes(batch: list[SubmitOutcome]) -> None:
            holder["h"].outcomes.extend(batch)
            holder["h"].batches.append(len(batch))

        def on_deliver(carrier: str, bind_id: str, pdu: Pdu) -> Deferred[int]:
            h = holder["h"]
            h.delivered.append((carrier, bind_id, pdu))
            if h.auto_deliver:
                return succeed(0)
            d: Deferred[int] = Deferred()
            h.deliver_results.append(d)
            return d

        link = CarrierLink(configs[0].carrier, list(configs), reactor=clock,
                           on_outcomes=on_outcomes, on_deliver=on_deliver, policy=policy,
                           endpoint_factory=lambda reactor, cfg: endpoint,
                           rng=random.Random(7), leased=leased)
        h = cls(clock, smsc, endpoint, link)
        holder["h"] = h
        return h

    def settle(self) -> None:
        """Move bytes both ways until nothing moves (no clock advance beyond 0)."""
        for _ in range(10_000):
            moved = False
            for pump in self.endpoint.pumps:
                if pump.pump():
                    moved = True
            if not moved:
                return
        raise AssertionError("pumps never settled")

    def advance(self, seconds: float, step: float = 0.05) -> None:
        """Let ``seconds`` of clock time pass in steps, moving bytes after each."""
        self.settle()
        steps = max(1, round(seconds / step))
        for _ in range(steps):
            self.clock.advance(seconds / steps)
            self.settle()

    def start(self) -> None:
        self.link.start()
        self.settle()

    def accepted_ids(self) -> list[int]:
        return [o.segment.segment_id for o in self.outcomes if o.accepted]
