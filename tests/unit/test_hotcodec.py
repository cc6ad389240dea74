"""The fast codec path agrees with smpplib: byte for byte on encode, field for field on decode.

PDUs of the four hot commands are generated with every declared field (mandatory and
TLV) taking values of the right type, edge values (empty, at and over smpplib's length
limits, non-Latin-1 text, out-of-range integers) and values of the wrong type; frames
are smpplib's encodings with known and unknown TLVs appended raw (duplicates, wrong
lengths, strings without NUL), then truncated, extended and bit-flipped. For each:

* ``hotcodec`` either declines (``None``) or gives exactly what smpplib gives;
* ``codec.encode``/``codec.decode`` equal ``smpplib_encode``/``smpplib_decode``,
  including the exception (type, and a DecodeError's reason, status, id and sequence).

A test also checks that the hot path is taken for the PDUs the bridge really sends, so
a fast path that always declined would fail here.
"""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from smpplib import consts, ptypes

from bridge.smpp import codec, hotcodec
from bridge.smpp.codec import DecodeError, Pdu

HOT = hotcodec.HOT_COMMANDS
PROTOS = {name: codec._fresh(name) for name in HOT}
TLV_HEADER = struct.Struct(">HH")
SETTINGS = settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ints = st.one_of(st.integers(0, 255), st.integers(0, 0xFFFF), st.sampled_from([0, 1, 255, 256, 65535, 65536, -1]),
                 st.integers(0, 0xFFFFFFFF))
latin_text = st.text(alphabet=st.characters(max_codepoint=0xFF), max_size=70)
texts = st.one_of(latin_text, st.text(max_size=30), st.sampled_from(["", "\x00", "a\x00b", "x" * 300, "\ud800"]),
                  st.integers(1, 5).map(lambda n: "9" * (n * 5)))
octets = st.one_of(st.binary(max_size=300), st.sampled_from([b"", b"\x00", b"x" * 255, b"x" * 256]))
wrong = st.one_of(st.none(), st.booleans(), st.floats(allow_nan=False), st.just(bytearray(b"ab")), st.just([1]))


def _value(param: Any) -> st.SearchStrategy[Any]:
    if param.type is int:
        base: st.SearchStrategy[Any] = ints
    elif param.type is str:
        base = texts
    elif param.type is ptypes.ostr:
        base = octets
    else:
        base = st.one_of(st.none(), st.booleans(), ints)
    other = st.one_of(texts, octets, ints)
    return st.one_of(base, base, base, wrong, other)


def _fields(command: str, typed_only: bool) -> st.SearchStrategy[dict[str, Any]]:
    params = PROTOS[command].params
    strategy = {name: (_typed(p) if typed_only else _value(p)) for name, p in params.items()}
    names = st.lists(st.sampled_from(sorted(params)), unique=True, max_size=len(params))
    fields = names.flatmap(lambda ns: st.fixed_dictionaries({n: strategy[n] for n in ns}))
    if typed_only:
        return fields
    stray = st.dictionaries(st.sampled_from(["sequence", "status", "command", "bogus"]), ints, max_size=1)
    return st.tuples(fields, st.one_of(st.just({}), stray)).map(lambda t: {**t[0], **t[1]})


def _typed(param: Any) -> st.SearchStrategy[Any]:
    """Values smpplib encodes without error, so the frames decode to something."""
    if param.type is int:
        return st.integers(0, (1 << (8 * getattr(param, "size", 1))) - 1)
    if param.type is str:
        return st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=0x7F), max_size=12)
    if param.type is ptypes.ostr:
        size = getattr(param, "size", None)
        return st.binary(min_size=size or 0, max_size=size or 160)
    return st.none()


def pdus(typed_only: bool = False) -> st.SearchStrategy[Pdu]:
    seqs = st.one_of(st.integers(1, 0x7FFFFFFF), st.sampled_from([0, 0xFFFFFFFF, 0x100000000, -1]))
    statuses = st.one_of(st.just(0), st.integers(0, 0x500), st.sampled_from([0xFFFFFFFF, -1]))
    if typed_only:
        seqs, statuses = st.integers(0, 0xFFFFFFFF), st.one_of(st.just(0), st.integers(0, 0xFFFF))
    unknown = st.lists(st.tuples(st.sampled_from([0x1400, 0x1401, 0x0427, 0x001E, 0xFFFF]),
                                 st.binary(max_size=8)), max_size=2).map(tuple)
    return st.sampled_from(HOT).flatmap(lambda c: st.builds(
        Pdu, st.just(c), seqs, statuses, _fields(c, typed_only), unknown))


def _outcome(fn: Any, arg: Any) -> tuple[str, Any]:
    try:
        return "ok", fn(arg)
    except DecodeError as exc:
        return "DecodeError", (exc.reason, exc.status, exc.command_id, exc.sequence)
    except Exception as exc:  # noqa: BLE001 (comparing whatever smpplib raises)
        return type(exc).__name__, None


# -- encode -----------------------------------------------------------------------------

@SETTINGS
@given(pdus())
@example(Pdu("submit_sm", 1, 0, {"short_message": b"x" * 256}))
@example(Pdu("submit_sm", 1, 0, {"short_message": b"x", "message_payload": b"y"}))
@example(Pdu("deliver_sm", 1, 0, {"receipted_message_id": "好" * 3, "network_error_code": b"\x03\x00\x01"}))
@example(Pdu("submit_sm_resp", 1, 8, {"message_id": "x" * 70}))
@example(Pdu("submit_sm", 1, 0, {"source_addr": "x" * 21, "registered_delivery": True}))
def test_encode_agrees_with_smpplib(pdu: Pdu) -> None:
    reference = _outcome(codec.smpplib_encode, pdu)
    assert _outcome(codec.encode, pdu) == reference
    fast = hotcodec.encode(pdu.command, pdu.sequence, pdu.status, pdu.fields)
    if fast is not None:
        bare = codec.smpplib_encode(Pdu(pdu.command, pdu.sequence, pdu.status, pdu.fields))
        assert fast == bare


# -- decode -----------------------------------------------------------------------------

def _tlv(tag: int, value: bytes, declared: int | None = None) -> bytes:
    return TLV_HEADER.pack(tag, len(value) if declared is None else declared) + value


known_tags = st.sampled_from(sorted(consts.OPTIONAL_PARAMS.values()))
raw_tlvs = st.lists(st.one_of(
    st.builds(_tlv, known_tags, st.binary(max_size=12)),
    st.builds(_tlv, st.sampled_from([0x020C, 0x020E, 0x020F, 0x0427]), st.binary(min_size=1, max_size=3)),
    st.builds(_tlv, st.sampled_from([0x001E, 0x0202]), st.sampled_from([b"abc", b"abc\x00", b"a\x00bc", b"", b"\x00"])),
    st.builds(_tlv, st.sampled_from([0x0424, 0x0423, 0x0381]), st.binary(max_size=20)),
    st.builds(_tlv, st.integers(0, 0xFFFF), st.binary(max_size=6)),
    st.builds(_tlv, known_tags, st.binary(max_size=4), st.integers(0, 12)),
), max_size=5).map(b"".join)


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    pdu = draw(pdus(typed_only=True))
    try:
        data = codec.smpplib_encode(pdu)
    except (struct.error, ValueError, TypeError, UnicodeError):
        assume(False)
    data += draw(raw_tlvs)
    cut = draw(st.one_of(st.none(), st.integers(16, max(16, len(data)))))
    if cut is not None:
        data = data[:cut]
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(4, max(4, len(data) - 1)))
        if at < len(data):
            data = data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1:]
    if draw(st.integers(0, 9)) == 0:
        data = data[:16] + draw(st.binary(max_size=60))
    length = draw(st.one_of(st.just(len(data)), st.just(len(data)), st.integers(0, 0x20000)))
    return struct.pack(">L", length) + data[4:]


@st.composite
def hot_headers_random_bodies(draw: st.DrawFn) -> bytes:
    command_id = codec.command_id_of(draw(st.sampled_from(HOT)))
    body = draw(st.binary(max_size=120))
    return codec.HEADER.pack(16 + len(body), command_id, draw(st.sampled_from([0, 0, 8])), 7) + body


@SETTINGS
@given(st.one_of(frames(), frames(), hot_headers_random_bodies()))
@example(codec.HEADER.pack(16, 0x80000004, 8, 3))                                  # error resp, no body
@example(codec.HEADER.pack(16, 0x00000004, 0, 3))                                  # request, no body
@example(codec.HEADER.pack(17, 0x80000004, 0, 3) + b"\x00")
@example(codec.HEADER.pack(37, 4, 0, 0) + bytes(17) + TLV_HEADER.pack(0x1400, 0))   # sm_length 0, unknown TLV
@example(codec.HEADER.pack(38, 4, 0, 0) + bytes(17) + TLV_HEADER.pack(0x020E, 1) + b"\x01")
def test_decode_agrees_with_smpplib(frame: bytes) -> None:
    reference = _outcome(codec.smpplib_decode, frame)
    assert _outcome(codec.decode, frame) == reference
    fast = hotcodec.decode(frame, codec.MAX_PDU_LENGTH)
    if fast is not None:
        assert reference[0] == "ok"
        ref: Pdu = reference[1]
        assert (fast.command, fast.sequence, fast.status) == (ref.command, ref.sequence, ref.status)
        assert fast.fields == ref.fields
        assert {k: type(v) for k, v in fast.fields.items()} == {k: type(v) for k, v in ref.fields.items()}
        assert fast.unknown_tlvs == ref.unknown_tlvs


# -- the fast path is really taken ------------------------------------------------------

def _traffic() -> list[Pdu]:
    """What the bridge and the simulator exchange for one two-part message and its receipt."""
    submit: dict[str, Any] = {
        "service_type": "", "source_addr_ton": 0, "source_addr_npi": 0, "source_addr": "106900011234",
        "dest_addr_ton": 1, "dest_addr_npi": 1, "destination_addr": "8613800138000", "esm_class": 0x40,
        "registered_delivery": 1, "data_coding": 8, "short_message": b"\x05\x00\x03\x07\x02\x01" + "你好".encode("utf-16-be"),
    }
    receipt = b"id:0123456789 sub:001 dlvrd:001 submit date:2612021820 done date:2612021821 stat:DELIVRD err:000 text:"
    return [
        Pdu("submit_sm", 11, 0, submit),
        Pdu("submit_sm", 12, 0, {**submit, "esm_class": 0, "short_message": b"",
                                 "message_payload": b"long" * 70, "sar_msg_ref_num": 7,
                                 "sar_total_segments": 2, "sar_segment_seqnum": 2}),
        Pdu("submit_sm_resp", 11, 0, {"message_id": "0123456789"}),
        Pdu("submit_sm_resp", 12, 0x58, {}),
        Pdu("deliver_sm", 5, 0, {"source_addr": "8613800138000", "destination_addr": "106900011234",
                                 "esm_class": 0x04, "short_message": receipt, "receipted_message_id": "0123456789",
                                 "message_state": 2, "network_error_code": b"\x03\x00\x00"},
            ((0x1401, b"vendor"),)),
        Pdu("deliver_sm_resp", 5, 0, {}),
    ]


def test_bridge_traffic_takes_the_fast_path_both_ways() -> None:
    for pdu in _traffic():
        fast = hotcodec.encode(pdu.command, pdu.sequence, pdu.status, pdu.fields)
        assert fast is not None, pdu.command
        frame = codec.encode(pdu)
        assert frame == codec.smpplib_encode(pdu)
        decoded = hotcodec.decode(frame, codec.MAX_PDU_LENGTH)
        assert decoded is not None, pdu.command
        assert codec.decode(frame) == codec.smpplib_decode(frame)
        assert decoded.unknown_tlvs == pdu.unknown_tlvs


def test_receipt_tlvs_decode_to_typed_fields() -> None:
    frame = codec.encode(_traffic()[4])
    pdu = codec.decode(frame)
    assert pdu.fields["receipted_message_id"] == "0123456789"
    assert pdu.fields["message_state"] == 2
    assert pdu.fields["network_error_code"] == b"\x03\x00\x00"
    assert pdu.unknown_tlvs == ((0x1401, b"vendor"),)
