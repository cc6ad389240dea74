"""Hostile bytes on the inbound PDU path of both sides: the bridge's ESME session and the simulator's SMSC.

Streams are random bytes, valid PDUs built with the codec (binds, submit_sm and
deliver_sm with known and unknown TLVs, keepalives, responses), and mutations of
them (flipped, inserted and deleted bytes, truncation, absurd command_length,
unknown command ids), cut into random chunks. Everything runs on ``task.Clock`` and
``StringTransport``, with logs rendered to JSON (so a log field that cannot be
rendered fails too) and thrown away. The contract checked for every stream:

* ``dataReceived`` never raises, and neither do timers run afterwards;
* every byte the protocol writes splits into frames the codec decodes;
* every request frame that was read gets exactly one answer with its sequence
  number (``<command>_resp`` or generic_nack; an undecodable one generic_nack with
  the decoder's status), except alert_notification on the ESME side;
* a command_length outside 16..64 KiB gets generic_nack ESME_RINVCMDLEN and the
  connection closed, and nothing after it is read; while the connection is open,
  every whole frame has been read (garbage of good length does not stop the stream);
* the receive buffer never holds a whole frame's worth: < 64 KiB after every call.

One test at the end does the same over real sockets against ``smsc-sim run``, while
a bound smpplib ESME on another connection keeps submitting.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from smpplib import command_codes, consts
from smpplib.client import Client
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from bridge.config import load_config as load_bridge_config
from bridge.finaliser import Finaliser
from bridge.inbound import InboundHandler
from bridge.logs import Redactor
from bridge.matching import ReceiptMatcher
from bridge.mo import MoHandler
from bridge.models import InboundMessage
from bridge.receipts import StatusMap
from bridge.smpp.codec import (
    HEADER,
    MAX_PDU_LENGTH,
    MIN_PDU_LENGTH,
    DecodeError,
    Pdu,
    decode,
    encode,
)
from bridge.smpp.framing import SmppFramedProtocol
from bridge.smpp.session import EsmeSession
from bridge.store import result_of
from bridge.store.sqlite import open_sqlite
from carriers.profiles import load_profiles
from carriers.sim.config import load_config
from carriers.sim.simulator import Simulator
from tests.binds.fakes import bind_config
from tests.sim.simproc import SimProcess, wait_for

# -- logs: rendered like the daemon's (JSON, redacted), written nowhere ----------------


@pytest.fixture(autouse=True, scope="module")
def _rendered_logs() -> Iterator[None]:
    with open(os.devnull, "w", encoding="utf-8") as sink:
        structlog.configure(
            processors=[structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso"),
                        Redactor(True), structlog.processors.format_exc_info,
                        structlog.processors.JSONRenderer(ensure_ascii=False)],
            wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
            logger_factory=structlog.PrintLoggerFactory(sink),
            cache_logger_on_first_use=False,
        )
        yield
        structlog.reset_defaults()


# -- valid PDUs ----------------------------------------------------------------------

SEQ = st.integers(1, 0x7FFFFFFF)
STATUS = st.sampled_from([0, 0x01, 0x08, 0x0D, 0x0E, 0x0F, 0x14, 0x45, 0x58, 0xFFFFFFFF]) | st.integers(0, 2**32 - 1)
KNOWN_TLVS = frozenset({0x0005, 0x0006, 0x0007, 0x000D, 0x000E, 0x000F, 0x0010, 0x0017, 0x0019, 0x001D,
                        0x001E, 0x0030, 0x0201, 0x0202, 0x0203, 0x0204, 0x0205, 0x0206, 0x0207, 0x0208,
                        0x0209, 0x020A, 0x020B, 0x020C, 0x020D, 0x020E, 0x020F, 0x0210, 0x0302, 0x0304,
                        0x0381, 0x0420, 0x0421, 0x0422, 0x0423, 0x0424, 0x0425, 0x0426, 0x0427, 0x0501,
                        0x1201, 0x1203, 0x1204, 0x1380, 0x1381, 0x1382, 0x1383, 0x1384}
                       | set(consts.OPTIONAL_PARAMS.values()))   # and every tag smpplib knows (0x0008...)
UNKNOWN_TLVS = st.lists(st.tuples(
    (st.integers(0x1400, 0x3FFF) | st.integers(0, 0xFFFF)).filter(lambda t: t not in KNOWN_TLVS),
    st.binary(max_size=40)), max_size=3)


def cstr(max_size: int) -> st.SearchStrategy[str]:
    """A C-octet string's worth of printable ASCII (the codec decodes C-strings as latin-1)."""
    return st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=max_size)


ADDR = st.sampled_from(["13800138000", "+8613800138000", "8613800138000", "10690001", "19212345678",
                        "447700900123", ""]) | cstr(20)
RECEIPT_TEXT = st.builds(
    lambda mid, stat, err: (f"id:{mid} sub:001 dlvrd:001 submit date:2501011200 done date:2501011201 "
                            f"stat:{stat} err:{err} text:hello").encode(),
    st.sampled_from(["1000", "0000000000001000", "a1b2"]) | cstr(20),
    st.sampled_from(["DELIVRD", "UNDELIV", "EXPIRED", "REJECTD", "MK:0024", "ENROUTE"]) | cstr(8),
    st.sampled_from(["000", "001", "xyz"]))
SHORT_MESSAGE = st.binary(max_size=254) | RECEIPT_TEXT | st.sampled_from(
    [b"\x05\x00\x03\x07\x02\x01" + "退订".encode("utf-16-be"), b"\x06\x08\x04\x01\x02\x03\x01ab", b"\x05\x00\x03"])
SM_TLVS = {
    "user_message_reference": st.integers(0, 0xFFFF), "source_port": st.integers(0, 0xFFFF),
    "destination_port": st.integers(0, 0xFFFF), "sar_msg_ref_num": st.integers(0, 0xFFFF),
    "sar_total_segments": st.integers(0, 255), "sar_segment_seqnum": st.integers(0, 255),
    "message_payload": st.binary(max_size=260) | RECEIPT_TEXT, "payload_type": st.integers(0, 255),
}
DELIVER_TLVS = {
    **SM_TLVS, "receipted_message_id": cstr(64), "message_state": st.integers(0, 255),
    "network_error_code": st.binary(min_size=3, max_size=3),
}


def _sm(command: str, tlvs: dict[str, st.SearchStrategy]) -> st.SearchStrategy[Pdu]:
    fields = st.fixed_dictionaries({
        "service_type": cstr(5), "source_addr_ton": st.integers(0, 6), "source_addr_npi": st.integers(0, 18),
        "source_addr": ADDR, "dest_addr_ton": st.integers(0, 6), "dest_addr_npi": st.integers(0, 18),
        "destination_addr": ADDR, "esm_class": st.sampled_from([0, 0x04, 0x40, 0x08]) | st.integers(0, 255),
        "registered_delivery": st.integers(0, 3) | st.integers(0, 255),
        "data_coding": st.sampled_from([0, 3, 4, 8, 0x0F, 0xF0]) | st.integers(0, 255),
        "short_message": SHORT_MESSAGE,
    }, optional=tlvs).map(_one_text)
    return st.builds(lambda seq, f, unknown: Pdu(command, seq, 0, f, tuple(unknown)), SEQ, fields, UNKNOWN_TLVS)


def _one_text(fields: dict[str, object]) -> dict[str, object]:
    """SMPP allows short_message or message_payload, not both (smpplib refuses to encode both)."""
    if fields.get("message_payload"):
        return {**fields, "short_message": b""}
    return fields


def _plain(command: str, fields: dict[str, st.SearchStrategy] | None = None,
           status: st.SearchStrategy[int] | None = None) -> st.SearchStrategy[Pdu]:
    return st.builds(lambda seq, s, f, unknown: Pdu(command, seq, s, f, tuple(unknown)),
                     SEQ, st.just(0) if status is None else status, st.fixed_dictionaries(fields or {}), UNKNOWN_TLVS | st.just([]))


BIND = st.builds(
    lambda kind, seq, creds, system_type: Pdu(f"bind_{kind}", seq, 0, {
        "system_id": creds[0], "password": creds[1], "system_type": system_type, "interface_version": 0x34}),
    st.sampled_from(["transmitter", "receiver", "transceiver"]), SEQ,
    st.tuples(cstr(15), cstr(8)) | st.just(("cmcc", "cmcc-pw")), cstr(12))
SUBMIT_SM = _sm("submit_sm", SM_TLVS)
DELIVER_SM = _sm("deliver_sm", DELIVER_TLVS)
REQUESTS = st.one_of(
    BIND, SUBMIT_SM, DELIVER_SM, _plain("enquire_link"), _plain("unbind"),
    _plain("query_sm", {"message_id": cstr(64).filter(bool), "source_addr": ADDR}),
    _plain("alert_notification", {"source_addr": ADDR, "esme_addr": ADDR}),
    _plain("data_sm", {"source_addr": ADDR, "destination_addr": ADDR, "esm_class": st.integers(0, 255)}),
)
RESPONSES = st.one_of(
    _plain("submit_sm_resp", {"message_id": cstr(64)}, STATUS), _plain("deliver_sm_resp", {}, STATUS),
    _plain("generic_nack", {}, STATUS), _plain("enquire_link_resp", {}, STATUS), _plain("unbind_resp"),
    st.builds(lambda kind, pdu: Pdu(f"bind_{kind}_resp", pdu.sequence, pdu.status, pdu.fields),
              st.sampled_from(["transmitter", "receiver", "transceiver"]),
              _plain("bind_transmitter_resp", {"system_id": cstr(15)}, STATUS)),
    _plain("data_sm_resp", {"message_id": cstr(64)}, STATUS),
)
VALID = st.one_of(REQUESTS, RESPONSES)

# -- mutations -----------------------------------------------------------------------

ABSURD_LENGTHS = st.sampled_from([0, 1, 4, 15, MAX_PDU_LENGTH + 1, 0x7FFFFFFF, 0xFFFFFFFF]) | st.integers(0, 2**32 - 1)
KNOWN_IDS = sorted(command_codes.commands.values())
COMMAND_IDS = (st.sampled_from(KNOWN_IDS) | st.sampled_from([0, 0x7, 0x8, 0x10, 0xFFFF, 0x80000007, 0x80000000 | 0xFFFF])
               | st.integers(0, 2**32 - 1))


@st.composite
def mutated(draw: st.DrawFn, frame: bytes) -> bytes:
    """``frame`` with one to three mutations; the length field is often fixed up to keep framing."""
    data = bytearray(frame)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "length", "command_id", "tlv"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 16))]
        elif kind == "truncate":
            del data[at:]
        elif kind == "length" and len(data) >= 4:
            data[:4] = struct.pack(">L", draw(ABSURD_LENGTHS))
        elif kind == "command_id" and len(data) >= 8:
            data[4:8] = struct.pack(">L", draw(COMMAND_IDS))
        elif kind == "tlv":
            tag, value = draw(st.integers(0, 0xFFFF)), draw(st.binary(max_size=20))
            data += struct.pack(">HH", tag, draw(st.sampled_from([len(value), len(value) + 5, 0xFFFF]))) + value
    if len(data) >= 4 and draw(st.booleans()):
        data[:4] = struct.pack(">L", len(data))
    return bytes(data)


@st.composite
def garbage_frame(draw: st.DrawFn, exclude: frozenset[int] = frozenset()) -> bytes:
    """A frame of good length whose header and body are arbitrary."""
    body = draw(st.binary(max_size=300))
    cid = draw(COMMAND_IDS.filter(lambda c: c not in exclude))
    return struct.pack(">LLLL", 16 + len(body), cid, draw(st.integers(0, 2**32 - 1)), draw(SEQ)) + body


PIECES = ("favourite",) * 4 + ("valid",) * 3 + ("mutated",) * 2 + ("garbage", "junk")


@st.composite
def streams(draw: st.DrawFn, favourite: st.SearchStrategy[Pdu]) -> bytes:
    """Mostly valid frames, the side's favourite PDU weighted up so streams get past the
    first checks (a bound SMSC accepts submits, an ESME records receipts), with mutated
    frames, garbage frames of good length and loose junk mixed in."""
    pieces = []
    for _ in range(draw(st.integers(0, 16))):
        kind = draw(st.sampled_from(PIECES))
        if kind == "favourite":
            pieces.append(encode(draw(favourite)))
        elif kind == "valid":
            pieces.append(encode(draw(VALID)))
        elif kind == "mutated":
            pieces.append(draw(mutated(encode(draw(favourite | VALID)))))
        elif kind == "garbage":
            pieces.append(draw(garbage_frame()))
        else:
            pieces.append(draw(st.binary(min_size=1, max_size=48)))
    return b"".join(pieces)


@st.composite
def chunked(draw: st.DrawFn, stream: bytes) -> list[bytes]:
    """``stream`` cut at random points: TCP keeps no frame boundaries."""
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(stream))), max_size=12))))
    edges = [0, *cuts, len(stream)]
    return [stream[a:b] for a, b in zip(edges, edges[1:], strict=False) if b > a]


# -- the two sides -------------------------------------------------------------------


class _Owner:
    """A SessionOwner that records what a real Bind would be told and acks every deliver_sm."""

    def __init__(self, deliver: Callable[[Pdu], Deferred[int]] | None = None) -> None:
        self.errors: list[str] = []
        self._deliver = deliver or (lambda pdu: succeed(0))

    def session_connected(self, session: EsmeSession) -> None:
        pass

    def session_bound(self, session: EsmeSession, system_id: str) -> None:
        pass

    def session_bind_refused(self, session: EsmeSession, status: int) -> None:
        pass

    def session_answers(self, session: EsmeSession, answers: list) -> None:
        pass

    def session_deliver(self, session: EsmeSession, pdu: Pdu) -> Deferred[int]:
        return self._deliver(pdu)

    def session_error(self, session: EsmeSession, detail: str) -> None:
        self.errors.append(detail)

    def session_lost(self, session: EsmeSession, unanswered: list, timed_out: list, reason: str) -> None:
        pass


@dataclass
class Side:
    """One protocol under test with its transport and clock, after its setup traffic."""

    proto: SmppFramedProtocol
    transport: StringTransport
    clock: Clock
    no_answer: frozenset[str]     # requests that are rightly left unanswered
    favourite: st.SearchStrategy[Pdu]  # what this side mostly reads in real life
    frames_before: int = 0
    errors_before: int = 0

    def settle(self) -> Side:
        self.transport.clear()
        self.frames_before = self.proto.pdus_in
        self.errors_before = self.proto.decode_errors
        return self


def bound_esme(clock: Clock | None = None, owner: _Owner | None = None) -> Side:
    """The bridge's EsmeSession, bound as a transceiver."""
    clock = clock or Clock()
    session = EsmeSession(bind_config(), owner or _Owner(), clock, structlog.get_logger("fuzz"))
    transport = StringTransport()
    session.makeConnection(transport)
    session.bind()
    (req,) = written(transport.value())
    session.dataReceived(encode(Pdu(req.command + "_resp", req.sequence, 0, {"system_id": "SMSC"})))
    assert session.ready
    return Side(session, transport, clock, frozenset({"alert_notification"}), DELIVER_SM).settle()


SIM_CONFIG = load_config(None)


def smsc_session(bound: bool) -> Side:
    """A simulator SMSC session of the cmcc account, bound as a transceiver or fresh."""
    clock = Clock()
    clock.advance(1_750_000_000.0)  # receipts carry dates
    smsc = Simulator(SIM_CONFIG, clock).carriers["cmcc"]
    session = smsc.buildProtocol(None)
    transport = StringTransport()
    session.makeConnection(transport)
    if bound:
        session.dataReceived(encode(Pdu("bind_transceiver", 1, 0, {
            "system_id": smsc.config.system_id, "password": smsc.config.password, "interface_version": 0x34})))
        assert session.bound
    return Side(session, transport, clock, frozenset(), SUBMIT_SM if bound else BIND | SUBMIT_SM).settle()


SIDES: dict[str, Callable[[], Side]] = {
    "esme-bound": lambda: bound_esme(),
    "smsc-bound": lambda: smsc_session(True),
    "smsc-unbound": lambda: smsc_session(False),
}

# -- the contract --------------------------------------------------------------------


def written(data: bytes) -> list[Pdu]:
    """Decode everything a protocol wrote; it must be whole, well-formed frames only."""
    out = []
    pos = 0
    while pos < len(data):
        assert len(data) - pos >= MIN_PDU_LENGTH, f"a partial header was written: {data[pos:].hex()}"
        length = HEADER.unpack_from(data, pos)[0]
        assert MIN_PDU_LENGTH <= length <= len(data) - pos, f"written command_length {length} is wrong"
        out.append(decode(data[pos:pos + length]))
        pos += length
    return out


def model_frames(stream: bytes) -> tuple[list[bytes], bool]:
    """Whole frames before the first unframeable header, and whether there is one."""
    frames = []
    pos = 0
    while len(stream) - pos >= 4:
        length = int.from_bytes(stream[pos:pos + 4], "big")
        if length < MIN_PDU_LENGTH or length > MAX_PDU_LENGTH:
            return frames, True
        if len(stream) - pos < length:
            break
        frames.append(stream[pos:pos + length])
        pos += length
    return frames, False


def feed(side: Side, chunks: list[bytes]) -> None:
    """Deliver chunks as a reactor would: nothing more once the protocol closed the connection."""
    for chunk in chunks:
        if side.transport.disconnecting:
            break
        side.proto.dataReceived(chunk)
        assert len(side.proto._buffer) < MAX_PDU_LENGTH


def check_contract(side: Side, stream: bytes, ordered: bool = True) -> list[Pdu]:
    """Hold what ``side`` wrote after reading ``stream`` to the contract; return the PDUs it wrote.

    ``ordered``: answers come in request order (no answer waits for a store commit).
    """
    out = written(side.transport.value())
    frames, bad_length = model_frames(stream)
    read = frames[:side.proto.pdus_in - side.frames_before]
    closed = side.transport.disconnecting
    if not closed:
        assert len(read) == len(frames) and not bad_length, "the stream stopped although the connection is open"
    expected: list[tuple[int | None, set[str], int | None]] = []
    undecodable = 0
    for frame in read:
        _, command_id, _, sequence = HEADER.unpack_from(frame)
        try:
            pdu = decode(frame)
        except DecodeError as exc:
            undecodable += 1
            if not command_id & 0x80000000:
                expected.append((sequence, {"generic_nack"}, exc.status))
            continue
        if not pdu.is_response and pdu.command not in side.no_answer:
            expected.append((sequence, {pdu.command + "_resp", "generic_nack"}, None))
    unframeable = side.proto.decode_errors - side.errors_before - undecodable
    assert unframeable in (0, 1)
    if unframeable:
        assert bad_length and len(read) == len(frames) and closed
        expected.append((None, {"generic_nack"}, consts.SMPP_ESME_RINVCMDLEN))
    answers = [p for p in out if p.is_response]
    assert len(answers) == len(expected), (answers, expected)

    def fits(answer: Pdu, sequence: int | None, commands: set[str], status: int | None) -> bool:
        return (answer.command in commands and (sequence is None or answer.sequence == sequence)
                and (status is None or answer.status == status))

    if ordered:
        for answer, want in zip(answers, expected, strict=True):
            assert fits(answer, *want), (answer, want)
    else:
        left = list(answers)
        for want in sorted(expected, key=lambda w: w[2] is None):  # the most specific first
            match = next((a for a in left if fits(a, *want)), None)
            assert match is not None, (want, left)
            left.remove(match)
    return out


def run_timers_and_close(side: Side) -> None:
    """Receipts, redeliveries, keepalives and timeouts run; what they write must decode; then the line drops."""
    side.transport.clear()
    side.clock.pump([1.0] * 90)
    written(side.transport.value())
    side.proto.connectionLost(Failure(ConnectionDone()))
    side.clock.pump([1.0] * 30)


FUZZ = settings(max_examples=250, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class TestCodecStrategies:
    @settings(max_examples=300, deadline=None)
    @given(pdu=VALID)
    def test_valid_pdus_round_trip(self, pdu: Pdu) -> None:
        """The 'valid' strategy builds PDUs the codec decodes back, so mutations start from real frames."""
        again = decode(encode(pdu))
        assert (again.command, again.sequence, again.status) == (pdu.command, pdu.sequence, pdu.status)
        assert again.unknown_tlvs == pdu.unknown_tlvs


@pytest.mark.parametrize("side_name", list(SIDES))
class TestHostileStreams:
    @FUZZ
    @given(data=st.data())
    def test_any_stream_any_chunking(self, side_name: str, data: st.DataObject) -> None:
        """Valid, mutated and garbage frames in random chunks: no exception, well-formed answers, one per request."""
        side = SIDES[side_name]()
        stream = data.draw(streams(side.favourite))
        feed(side, data.draw(chunked(stream)))
        check_contract(side, stream)
        run_timers_and_close(side)

    @FUZZ
    @given(data=st.data(), junk=st.binary(max_size=2048))
    def test_random_bytes(self, side_name: str, data: st.DataObject, junk: bytes) -> None:
        """Pure random bytes in random chunks are held to the same contract."""
        side = SIDES[side_name]()
        feed(side, data.draw(chunked(junk)))
        check_contract(side, junk)
        run_timers_and_close(side)

    @settings(max_examples=150, deadline=None)
    @given(data=st.data(), length=ABSURD_LENGTHS.filter(lambda n: not MIN_PDU_LENGTH <= n <= MAX_PDU_LENGTH),
           tail=st.binary(max_size=64))
    def test_bad_length_nacks_and_closes(self, side_name: str, data: st.DataObject, length: int,
                                         tail: bytes) -> None:
        """A command_length outside 16..64 KiB after good frames: generic_nack RINVCMDLEN, close, nothing after read."""
        side = SIDES[side_name]()
        before = [encode(Pdu("enquire_link", seq, 0, {})) for seq in data.draw(st.lists(SEQ, max_size=3))]
        after = encode(Pdu("enquire_link", 4242, 0, {}))
        stream = b"".join(before) + struct.pack(">L", length) + tail + after
        feed(side, data.draw(chunked(stream)))
        out = check_contract(side, stream)
        assert side.transport.disconnecting
        assert [p.command for p in out] == ["enquire_link_resp"] * len(before) + ["generic_nack"]
        assert out[-1].status == consts.SMPP_ESME_RINVCMDLEN

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(data=st.data())
    def test_stream_carries_on_after_garbage_of_good_length(self, side_name: str, data: st.DataObject) -> None:
        """After frames of good length with arbitrary content, a valid enquire_link is still answered."""
        side = SIDES[side_name]()
        closing = frozenset({0x00000006, 0x80000006})  # unbind, unbind_resp: a clean close is their meaning
        junk = data.draw(st.lists(garbage_frame(closing) | VALID.filter(
            lambda p: p.command not in ("unbind", "unbind_resp")).map(encode), min_size=1, max_size=10))
        probe = encode(Pdu("enquire_link", 0x7FFFFFFE, 0, {}))
        stream = b"".join(junk) + probe
        feed(side, data.draw(chunked(stream)))
        out = check_contract(side, stream)
        assert not side.transport.disconnecting
        assert (out[-1].command, out[-1].sequence) == ("enquire_link_resp", 0x7FFFFFFE)


@pytest.mark.parametrize("side_name", list(SIDES))
class TestBoundedBuffer:
    def test_megabytes_of_junk_frames(self, side_name: str) -> None:
        """4 MiB of good-length junk frames in 4 KiB chunks: the buffer stays under one frame, all are nacked."""
        side = SIDES[side_name]()
        rng = random.Random(1)
        frames = []
        while sum(map(len, frames)) < 4 * 1024 * 1024:
            body = rng.randbytes(rng.randrange(0, 3000))
            frames.append(struct.pack(">LLLL", 16 + len(body), 0x7, 0, len(frames) + 1) + body)
        stream = b"".join(frames)
        peak = 0
        for i in range(0, len(stream), 4096):
            side.proto.dataReceived(stream[i:i + 4096])
            peak = max(peak, len(side.proto._buffer))
        assert peak < 4096 + 3016
        out = check_contract(side, stream)
        assert len(out) == len(frames) and {p.command for p in out} == {"generic_nack"}

    def test_largest_frame_byte_by_byte(self, side_name: str) -> None:
        """A 64 KiB frame fed one octet at a time is held whole, then answered, and the buffer empties."""
        side = SIDES[side_name]()
        frame = struct.pack(">LLLL", MAX_PDU_LENGTH, 0x7, 0, 9) + bytes(MAX_PDU_LENGTH - 16)
        for i in range(len(frame) - 1):
            side.proto.dataReceived(frame[i:i + 1])
        assert len(side.proto._buffer) == MAX_PDU_LENGTH - 1
        side.proto.dataReceived(frame[-1:])
        assert len(side.proto._buffer) == 0
        (nack,) = check_contract(side, frame)
        assert (nack.command, nack.sequence, nack.status) == ("generic_nack", 9, consts.SMPP_ESME_RINVCMDID)


# -- the bridge's whole inbound path: session, receipts, MO, store ----------------------

BRIDGE_CONFIG = load_bridge_config(Path(__file__).resolve().parents[2] / "config" / "default.toml")
PROFILES, _ = load_profiles()
STATUS_MAP = StatusMap.load()
MO_TEXT = st.sampled_from([b"T", b"TD", "退订".encode("utf-16-be"), b"\x05\x00\x03\x2a\x02\x01" + "退".encode("utf-16-be"),
                           b"\x05\x00\x03\x2a\x02\x02" + "订".encode("utf-16-be"), b"\x06\x08\x04\x01\x02\x02\x01A"])
CHANNEL_ADDR = st.sampled_from(["10690001", "1069000199", "10690002", "106900", "10690001" + "9" * 12])
MO_OR_RECEIPT = st.builds(
    lambda pdu, dest, text, esm: Pdu("deliver_sm", pdu.sequence, 0, {
        **pdu.fields, "destination_addr": dest, "short_message": pdu.fields["short_message"] or (b"" if pdu.get("message_payload") else text),
        "esm_class": esm}, pdu.unknown_tlvs),
    DELIVER_SM, CHANNEL_ADDR | ADDR, MO_TEXT, st.sampled_from([0, 0x04, 0x40, 0x20, 0x44]) | st.integers(0, 255),
)


@st.composite
def body_mutated(draw: st.DrawFn, frame: bytes) -> bytes:
    """``frame`` with its body (not its header) flipped, cut or extended, and the length fixed."""
    body = bytearray(frame[16:])
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(body)))
        kind = draw(st.sampled_from(["flip", "insert", "delete"]))
        if kind == "flip" and at < len(body):
            body[at] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            body[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            del body[at:at + draw(st.integers(1, 8))]
    return struct.pack(">L", 16 + len(body)) + frame[4:16] + bytes(body)


@dataclass
class Inbound:
    """The daemon's InboundHandler (receipts, MO, blacklist) on one in-memory store.

    Built once: applying the store's migrations takes longer than a hundred examples.
    """

    clock: Clock
    handler: InboundHandler

    def handled(self) -> int:
        return sum(self.handler.receipts.values()) + self.handler.mo_count

    def session(self) -> Side:
        """A new bound EsmeSession whose deliver_sm go to the handler, as the daemon passes them."""
        owner = _Owner(lambda pdu: self.handler.on_deliver("cmcc", "cmcc-1", InboundMessage.from_fields(pdu.fields)))
        return bound_esme(self.clock, owner)


@pytest.fixture(scope="module", name="inbound")
def _inbound() -> Iterator[Inbound]:
    clock = Clock()
    clock.advance(1_800_000_000)
    store, _ = open_sqlite(":memory:", clock=clock, commit_interval_s=0.005)
    finaliser = Finaliser(store, now=clock.seconds)
    matcher = ReceiptMatcher(store, finaliser, STATUS_MAP, PROFILES, now=clock.seconds)
    mo = MoHandler(BRIDGE_CONFIG, store, now=clock.seconds)
    yield Inbound(clock, InboundHandler(store, matcher, mo))
    result_of(store.close())


class TestBridgeInboundPath:
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(data=st.data())
    def test_no_deliver_sm_poisons_the_inbound_path(self, inbound: Inbound, data: st.DataObject) -> None:
        """Receipts and MO, valid or with mangled bodies: each that decodes is recorded and acknowledged ROK."""
        side = inbound.session()
        handled = inbound.handled()
        frames = [data.draw(body_mutated(encode(pdu)) if data.draw(st.booleans()) else st.just(encode(pdu)))
                  for pdu in data.draw(st.lists(MO_OR_RECEIPT, min_size=1, max_size=8))]
        stream = b"".join(frames)
        feed(side, data.draw(chunked(stream)))
        side.clock.pump([0.01] * 5)  # the group commit that releases deliver_sm_resp
        check_contract(side, stream, ordered=False)
        decoded = []
        for frame in frames:
            try:
                pdu = decode(frame)
            except DecodeError:
                continue
            decoded.append(pdu)
        answers = [p for p in written(side.transport.value()) if p.command == "deliver_sm_resp"]
        assert [(a.sequence, a.status) for a in answers] == [(p.sequence, 0) for p in decoded]
        assert inbound.handled() - handled == len(decoded)
        assert not [e for e in side.proto._owner.errors if e.startswith("deliver_sm not recorded")]
        run_timers_and_close(side)


# -- real sockets: junk on one connection, a bound ESME on another keeps working --------

CARRIERS = ("cmcc", "cucc", "ctcc", "cbn", "intl")
SIM_TOML = "[sim]\ncontrol_port = 0\nreceipt_delay_ms = [0, 5]\n" + "".join(
    f"[sim.carriers.{cid}]\nport = 0\n" for cid in CARRIERS)


def _read_frames(sock: socket.socket, buf: bytearray, until: Callable[[list[Pdu]], bool],
                 seen: list[Pdu]) -> bool:
    """Read PDUs into ``seen`` until ``until(seen)``; False when the peer closed first."""
    while not until(seen):
        while len(buf) >= 4 and len(buf) >= int.from_bytes(buf[:4], "big"):
            length = int.from_bytes(buf[:4], "big")
            seen.append(decode(bytes(buf[:length])))
            del buf[:length]
            if until(seen):
                return True
        chunk = sock.recv(65536)
        if not chunk:
            return False
        buf += chunk
    return True


def _junk_frames(rng: random.Random, count: int) -> list[bytes]:
    frames = []
    for i in range(count):
        cid = rng.choice([0x1, 0x2, 0x3, 0x4, 0x5, 0x9, 0x15, 0x102, 0x103, 0x7, 0xFFFF, rng.getrandbits(31)])
        body = rng.randbytes(rng.randrange(0, 200))
        frames.append(struct.pack(">LLLL", 16 + len(body), cid, rng.getrandbits(32), 1000 + i) + body)
    return frames


def test_junk_connections_beside_a_bound_esme(tmp_path: Path) -> None:
    """smsc-sim run: junk, garbage frames and absurd lengths on other connections; smpplib's ESME keeps submitting."""
    config = tmp_path / "sim.toml"
    config.write_text(SIM_TOML, encoding="utf-8")
    sim = SimProcess(config, tmp_path / "sim.log")
    client = None
    try:
        port = sim.ports["cmcc"]
        client = Client("127.0.0.1", port, timeout=5, allow_unknown_opt_params=True)
        answers: list = []
        client.set_message_sent_handler(lambda pdu: answers.append(pdu))
        client.connect()
        client.bind_transceiver(system_id="cmcc", password="cmcc-pw")
        rng = random.Random(20261)
        for rnd in range(12):
            junk = socket.create_connection(("127.0.0.1", port), timeout=10)
            buf, seen = bytearray(), []
            frames = _junk_frames(rng, 8)
            junk.sendall(b"".join(frames) + encode(Pdu("enquire_link", 77, 0, {})))
            assert _read_frames(junk, buf, lambda s: any(p.sequence == 77 for p in s), seen)
            assert [p.sequence for p in seen] == [1000 + i for i in range(8)] + [77]
            assert all(p.command == "generic_nack" or p.command.endswith("_resp") for p in seen)

            client.send_message(source_addr_ton=5, source_addr="10690001", dest_addr_ton=0, dest_addr_npi=1,
                                destination_addr="13800138000", short_message=f"round {rnd}".encode(),
                                data_coding=0, registered_delivery=0)
            wait_for(lambda n=rnd: len(answers) > n or client.read_once() or len(answers) > n, what="submit_sm_resp")

            absurd = rng.choice([0, 7, 15, MAX_PDU_LENGTH + 1, 0x7FFFFFFF, 0xFFFFFFFF])
            junk.sendall(struct.pack(">L", absurd) + rng.randbytes(rng.randrange(0, 4096)))
            seen.clear()
            assert not _read_frames(junk, buf, lambda s: False, seen), "the junk connection stayed open"
            assert [(p.command, p.status) for p in seen] == [("generic_nack", consts.SMPP_ESME_RINVCMDLEN)]
            junk.close()
        hanging = socket.create_connection(("127.0.0.1", port), timeout=10)
        hanging.sendall(struct.pack(">LLLL", MAX_PDU_LENGTH, 0x4, 0, 1) + bytes(30_000))  # never completed
        client.send_message(source_addr_ton=5, source_addr="10690001", dest_addr_ton=0, dest_addr_npi=1,
                            destination_addr="13800138000", short_message=b"after", data_coding=0,
                            registered_delivery=0)
        wait_for(lambda: len(answers) > 12 or client.read_once() or len(answers) > 12, what="last submit_sm_resp")
        hanging.close()
        assert [a.status for a in answers] == [0] * 13
        assert sim.proc.poll() is None
        stats = sim.stats("cmcc")
        assert stats["accepted"] == 13 and stats["malformed"] >= 12
    finally:
        if client is not None:
            client.disconnect()
        sim.stop()
