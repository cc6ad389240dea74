"""EsmeSession on a StringTransport and a Clock: bytes in, bytes out, timers by hand."""

from __future__ import annotations

import struct

import pytest
import structlog
from smpplib import consts
from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport

from bridge.smpp.codec import Pdu, decode, encode
from bridge.smpp.queue import SegmentQueue
from bridge.smpp.session import EsmeSession, SubmitAnswer
from tests.binds.fakes import bind_config, segments


class Owner:
    """Records what the session reports."""

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.answers: list[SubmitAnswer] = []
        self.delivers: list[Deferred[int]] = []

    def session_connected(self, session: EsmeSession) -> None:
        self.events.append(("connected",))

    def session_bound(self, session: EsmeSession, system_id: str) -> None:
        self.events.append(("bound", system_id))

    def session_bind_refused(self, session: EsmeSession, status: int) -> None:
        self.events.append(("refused", status))

    def session_answers(self, session: EsmeSession, answers: list[SubmitAnswer]) -> None:
        self.events.append(("answers", len(answers)))
        self.answers.extend(answers)

    def session_deliver(self, session: EsmeSession, pdu: Pdu) -> Deferred[int]:
        d: Deferred[int] = Deferred()
        self.delivers.append(d)
        return d

    def session_error(self, session: EsmeSession, detail: str) -> None:
        self.events.append(("error", detail))

    def session_lost(self, session, unanswered, timed_out, reason) -> None:
        self.events.append(("lost", [e.segment.segment_id for e in unanswered],
                            [e.segment.segment_id for e in timed_out]))


class Wire:
    def __init__(self, **cfg: object) -> None:
        self.clock = task.Clock()
        self.owner = Owner()
        self.session = EsmeSession(bind_config(**cfg), self.owner, self.clock, structlog.get_logger())
        self.transport = StringTransport()
        self.session.makeConnection(self.transport)

    def sent(self) -> list[Pdu]:
        data = self.transport.value()
        self.transport.clear()
        out = []
        while data:
            (length,) = struct.unpack(">L", data[:4])
            out.append(decode(data[:length]))
            data = data[length:]
        return out

    def feed(self, *pdus: Pdu) -> None:
        self.session.dataReceived(b"".join(encode(p) for p in pdus))

    def bind(self) -> None:
        self.session.bind()
        (req,) = self.sent()
        self.feed(Pdu(req.command + "_resp", req.sequence, 0, {"system_id": "SMSC"}))

    def lose(self) -> None:
        self.session.connectionLost(None)


@pytest.fixture(name="wire")
def _wire() -> Wire:
    return Wire()


class TestBind:
    def test_bind_request_carries_credentials(self, wire: Wire) -> None:
        """bind_transceiver with system_id, password and interface version 3.4."""
        wire.session.bind()
        (req,) = wire.sent()
        assert req.command == "bind_transceiver"
        assert (req.get("system_id"), req.get("password"), req.get("interface_version")) == ("esme", "pw", 0x34)

    def test_bound(self, wire: Wire) -> None:
        """A zero-status bind response makes the session ready."""
        wire.bind()
        assert ("bound", "SMSC") in wire.owner.events
        assert wire.session.ready

    def test_refused_bind_closes(self, wire: Wire) -> None:
        """A refused bind is reported with its status and the connection closed."""
        wire.session.bind()
        (req,) = wire.sent()
        wire.feed(Pdu("bind_transceiver_resp", req.sequence, consts.SMPP_ESME_RINVPASWD))
        assert ("refused", consts.SMPP_ESME_RINVPASWD) in wire.owner.events
        assert wire.transport.disconnecting

    def test_bind_timeout_aborts(self, wire: Wire) -> None:
        """No bind response within response_timeout_s: the connection is cut."""
        wire.session.bind()
        wire.clock.advance(4.9)
        assert not wire.transport.disconnecting
        wire.clock.advance(0.2)
        assert wire.transport.disconnecting


class TestSubmitWindow:
    def test_one_write_per_batch_and_batched_answers(self, wire: Wire) -> None:
        """A batch goes out in one write; answers of one chunk reach the owner as one list."""
        wire.bind()
        queue = SegmentQueue()
        queue.push(segments(1, 5))
        writes: list[bytes] = []
        wire.transport.write = writes.append  # type: ignore[method-assign]
        wire.session.submit(queue.take(5))
        assert len(writes) == 1
        reqs = [decode(writes[0][i:i + struct.unpack(">L", writes[0][i:i + 4])[0]])
                for i in _offsets(writes[0])]
        assert [r.get("short_message") for r in reqs] == [b"1", b"2", b"3", b"4", b"5"]
        assert wire.session.in_flight == 5
        wire.feed(*[Pdu("submit_sm_resp", r.sequence, 0, {"message_id": f"m{r.sequence}"}) for r in reqs])
        assert ("answers", 5) in wire.owner.events
        assert wire.session.in_flight == 0
        assert [a.message_id for a in wire.owner.answers] == [f"m{r.sequence}" for r in reqs]

    def test_response_timeout_reports_timed_out_and_unanswered(self, wire: Wire) -> None:
        """The oldest submit's deadline cuts the connection; all in flight are handed back in order."""
        wire.bind()
        queue = SegmentQueue()
        queue.push(segments(1, 3))
        wire.session.submit(queue.take(2))
        wire.clock.advance(2.0)
        wire.session.submit(queue.take(1))
        wire.clock.advance(3.0)
        assert wire.transport.disconnecting
        wire.lose()
        assert wire.owner.events[-1] == ("lost", [1, 2, 3], [1, 2])

    def test_generic_nack_answers_the_submit(self, wire: Wire) -> None:
        """A generic_nack with a submit's sequence is that submit's (transient) answer."""
        wire.bind()
        queue = SegmentQueue()
        queue.push(segments(1, 1))
        wire.session.submit(queue.take(1))
        (req,) = wire.sent()
        wire.feed(Pdu("generic_nack", req.sequence, consts.SMPP_ESME_RSYSERR))
        (answer,) = wire.owner.answers
        assert answer.nacked and wire.session.in_flight == 0


class TestKeepalive:
    def test_enquire_link_after_idle_then_timeout(self, wire: Wire) -> None:
        """Idle for enquire_link_s: enquire_link; unanswered: connection cut."""
        wire.bind()
        wire.clock.advance(9.9)
        assert wire.sent() == []
        wire.clock.advance(0.1)
        (req,) = wire.sent()
        assert req.command == "enquire_link"
        wire.clock.advance(5.0)
        assert wire.transport.disconnecting

    def test_traffic_postpones_enquire_link(self, wire: Wire) -> None:
        """Inbound traffic counts as liveness; an answered enquire_link keeps the session."""
        wire.bind()
        wire.clock.advance(8.0)
        wire.feed(Pdu("enquire_link", 77))
        assert [p.command for p in wire.sent()] == ["enquire_link_resp"]
        wire.clock.advance(8.0)
        assert wire.sent() == []
        wire.clock.advance(2.0)
        (req,) = wire.sent()
        wire.feed(Pdu("enquire_link_resp", req.sequence))
        wire.clock.advance(5.0)
        assert not wire.transport.disconnecting


class TestInbound:
    def test_deliver_answered_only_after_recording(self, wire: Wire) -> None:
        """deliver_sm_resp goes out when the owner's Deferred fires, with its status."""
        wire.bind()
        wire.feed(Pdu("deliver_sm", 9, 0, {"source_addr": "1", "destination_addr": "2",
                                          "esm_class": 4, "short_message": b"id:1 stat:DELIVRD"}))
        assert wire.sent() == []
        wire.owner.delivers[0].callback(0)
        (resp,) = wire.sent()
        assert (resp.command, resp.sequence, resp.status) == ("deliver_sm_resp", 9, 0)

    def test_deliver_recording_failure_asks_for_redelivery(self, wire: Wire) -> None:
        """If recording fails the SMSC gets ESME_RX_T_APPN and will redeliver."""
        wire.bind()
        wire.feed(Pdu("deliver_sm", 9, 0, {"short_message": b"x"}))
        wire.owner.delivers[0].errback(RuntimeError("disk full"))
        (resp,) = wire.sent()
        assert resp.status == consts.SMPP_ESME_RX_T_APPN

    def test_smsc_unbind_is_answered(self, wire: Wire) -> None:
        """The SMSC's unbind gets unbind_resp and the session closes."""
        wire.bind()
        wire.feed(Pdu("unbind", 5))
        (resp,) = wire.sent()
        assert (resp.command, resp.sequence) == ("unbind_resp", 5)
        assert wire.transport.disconnecting

    def test_unknown_command_gets_generic_nack(self, wire: Wire) -> None:
        """An unknown command id is nacked with ESME_RINVCMDID and the session stays up."""
        wire.bind()
        wire.session.dataReceived(struct.pack(">LLLL", 16, 0x00000999, 0, 41))
        (nack,) = wire.sent()
        assert (nack.command, nack.sequence, nack.status) == ("generic_nack", 41, consts.SMPP_ESME_RINVCMDID)
        assert wire.session.ready and not wire.transport.disconnecting

    def test_malformed_request_gets_generic_nack(self, wire: Wire) -> None:
        """A truncated deliver_sm body is nacked; the stream carries on."""
        wire.bind()
        body = b"\x00\x01\x01"  # service_type "", then a cut-off address
        wire.session.dataReceived(struct.pack(">LLLL", 16 + len(body), 0x00000005, 0, 42) + body)
        (nack,) = wire.sent()
        assert (nack.command, nack.sequence) == ("generic_nack", 42)
        wire.feed(Pdu("enquire_link", 43))
        assert [p.command for p in wire.sent()] == ["enquire_link_resp"]

    def test_bad_length_disconnects(self, wire: Wire) -> None:
        """A command_length under 16 cannot be resynchronised: nack and disconnect."""
        wire.bind()
        wire.session.dataReceived(struct.pack(">LLLL", 8, 0x15, 0, 1))
        (nack,) = wire.sent()
        assert nack.command == "generic_nack"
        assert wire.transport.disconnecting


def _offsets(data: bytes) -> list[int]:
    out, i = [], 0
    while i < len(data):
        out.append(i)
        i += struct.unpack(">L", data[i:i + 4])[0]
    return out
