"""SMPP 3.4 wire codec: the only module that touches smpplib's PDU classes.

smpplib is used as a pure codec and has traps (see issue "Carrier binds"): it wants a
client object with ``next_sequence()``, ignores ``sequence=``, returns C-strings as
bytes, raises on undeclared TLVs and parses truncated bodies without complaint. This
module walks the PDU structure with smpplib's own field tables first, so only
well-formed bodies reach smpplib, and hands back plain :class:`Pdu` objects. The four
PDUs of every message go through :mod:`bridge.smpp.hotcodec` first, which packs them
from the same tables and defers to smpplib for anything it would not reproduce exactly.
"""

from __future__ import annotations

import copy
import struct
from dataclasses import dataclass, field
from typing import Any

from smpplib import command_codes, consts, exceptions, ptypes
from smpplib import smpp as sm_smpp

from bridge.smpp import hotcodec

__all__ = [
    "HEADER",
    "MAX_PDU_LENGTH",
    "MIN_PDU_LENGTH",
    "DecodeError",
    "Pdu",
    "SequenceCounter",
    "command_id_of",
    "decode",
    "encode",
    "smpplib_decode",
    "smpplib_encode",
]

HEADER = struct.Struct(">LLLL")
MIN_PDU_LENGTH = 16
MAX_PDU_LENGTH = 64 * 1024

_TLV_HEADER = struct.Struct(">HH")
_TLV_NAMES: dict[int, str] = {code: name for name, code in consts.OPTIONAL_PARAMS.items()}
_COMMAND_NAMES: dict[int, str] = {code: name for name, code in command_codes.commands.items()}
_COMMAND_IDS: dict[str, int] = dict(command_codes.commands)


@dataclass(slots=True)
class Pdu:
    """One decoded PDU. C-strings are ``str``, octet strings ``bytes``, integers ``int``."""

    command: str
    sequence: int
    status: int = 0
    fields: dict[str, Any] = field(default_factory=dict)
    unknown_tlvs: tuple[tuple[int, bytes], ...] = ()

    def get(self, name: str, default: Any = None) -> Any:
        return self.fields.get(name, default)

    @property
    def is_response(self) -> bool:
        return bool(_COMMAND_IDS[self.command] & 0x80000000)


class DecodeError(Exception):
    """A frame that cannot be decoded; ``status`` is what a generic_nack should carry."""

    def __init__(self, reason: str, status: int, command_id: int | None, sequence: int | None):
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.command_id = command_id
        self.sequence = sequence


class SequenceCounter:
    """Per-session sequence numbers, 1..0x7FFFFFFF, wrapping (SMPP 3.4 section 3.2)."""

    __slots__ = ("_last",)

    def __init__(self, start: int = 0) -> None:
        self._last = start

    def next(self) -> int:
        self._last = self._last + 1 if self._last < 0x7FFFFFFF else 1
        return self._last

    # smpplib calls this name when it builds request PDUs.
    next_sequence = next

    @property
    def sequence(self) -> int:
        return self._last


_ENCODER_CLIENT = SequenceCounter()
_PROTOTYPES: dict[str, Any] = {}


def _fresh(name: str) -> Any:
    """A blank smpplib PDU object of command ``name``.

    smpplib's constructor walks every declared field through hasattr/getattr/setattr
    (about 45 for submit_sm and deliver_sm), which profiling showed as a tenth of the
    daemon's codec time. A shallow copy of one blank prototype gives the same object.
    """
    proto = _PROTOTYPES.get(name)
    if proto is None:
        proto = sm_smpp.make_pdu(name, client=_ENCODER_CLIENT, allow_unknown_opt_params=True)
        _PROTOTYPES[name] = proto
    return copy.copy(proto)


hotcodec.install(_fresh)


def command_id_of(name: str) -> int:
    return _COMMAND_IDS[name]


def encode(pdu: Pdu) -> bytes:
    """Serialise a PDU; unknown TLVs are appended raw so fault injection can send them."""
    data = hotcodec.encode(pdu.command, pdu.sequence, pdu.status, pdu.fields)
    if data is None:
        return smpplib_encode(pdu)
    if pdu.unknown_tlvs:
        data = _with_unknown_tlvs(data, pdu.unknown_tlvs)
    return data


def smpplib_encode(pdu: Pdu) -> bytes:
    """:func:`encode` through smpplib alone: the reference the fast path is tested against."""
    try:
        obj = _fresh(pdu.command)
    except exceptions.UnknownCommandError as exc:
        raise ValueError(f"cannot encode command {pdu.command!r}") from exc
    for key, value in pdu.fields.items():
        setattr(obj, key, value)
    obj.sequence = pdu.sequence
    obj.status = pdu.status
    data = obj.generate()
    if pdu.unknown_tlvs:
        data = _with_unknown_tlvs(data, pdu.unknown_tlvs)
    return data


def _with_unknown_tlvs(data: bytes, tlvs: tuple[tuple[int, bytes], ...]) -> bytes:
    extra = b"".join(_TLV_HEADER.pack(tag, len(v)) + v for tag, v in tlvs)
    return struct.pack(">L", len(data) + len(extra)) + data[4:] + extra


def decode(frame: bytes) -> Pdu:
    """Decode one whole frame (header included) or raise :class:`DecodeError`."""
    hot = hotcodec.decode(frame, MAX_PDU_LENGTH)
    if hot is not None:
        return Pdu(hot.command, hot.sequence, hot.status, hot.fields, hot.unknown_tlvs)
    return smpplib_decode(frame)


def smpplib_decode(frame: bytes) -> Pdu:
    """:func:`decode` through smpplib alone: the reference the fast path is tested against."""
    if len(frame) < MIN_PDU_LENGTH:
        raise DecodeError("frame shorter than the 16-octet header", consts.SMPP_ESME_RINVCMDLEN, None, None)
    length, command_id, status, sequence = HEADER.unpack_from(frame)
    if length != len(frame) or length > MAX_PDU_LENGTH:
        raise DecodeError(
            f"command_length {length} does not match frame of {len(frame)} octets",
            consts.SMPP_ESME_RINVCMDLEN, command_id, sequence,
        )
    name = _COMMAND_NAMES.get(command_id)
    if name is None:
        raise DecodeError(f"unknown command_id 0x{command_id:08x}", consts.SMPP_ESME_RINVCMDID, command_id, sequence)
    try:
        obj = _fresh(name)
    except exceptions.UnknownCommandError:
        raise DecodeError(f"unsupported command {name}", consts.SMPP_ESME_RINVCMDID, command_id, sequence) from None
    body = frame[16:]
    fields: dict[str, Any] = {}
    unknown: list[tuple[int, bytes]] = []
    if body:
        try:
            clean = _checked_body(obj, body, status, unknown)
        except _Malformed as exc:
            raise DecodeError(f"{name}: {exc}", _malformed_status(exc), command_id, sequence) from None
        try:
            obj.parse_params(clean)
        except (struct.error, KeyError, ValueError, IndexError, exceptions.UnknownCommandError) as exc:
            raise DecodeError(f"{name}: {exc!r}", consts.SMPP_ESME_RSYSERR, command_id, sequence) from None
        for fname, param in obj.params.items():
            value = getattr(obj, fname, None)
            if value is None:
                continue
            if param.type is str and isinstance(value, bytes | bytearray):
                value = bytes(value).decode("latin-1")
            fields[fname] = value
    elif _needs_body(obj, status):
        raise DecodeError(f"{name}: empty body", consts.SMPP_ESME_RINVCMDLEN, command_id, sequence)
    return Pdu(name, sequence, status, fields, tuple(unknown))


class _Malformed(Exception):
    def __init__(self, reason: str, status: int = consts.SMPP_ESME_RINVCMDLEN):
        super().__init__(reason)
        self.status = status


def _malformed_status(exc: _Malformed) -> int:
    return exc.status


def _mandatory_fields(obj: Any) -> list[str]:
    return [f for f in obj.params_order if not obj.field_is_optional(f)]


def _needs_body(obj: Any, status: int) -> bool:
    # Error responses may omit their body (SMPP 3.4 section 4.4.2); requests may not.
    if status != 0 and obj.is_response():
        return False
    return bool(_mandatory_fields(obj))


def _checked_body(obj: Any, body: bytes, status: int, unknown: list[tuple[int, bytes]]) -> bytes:
    """Walk mandatory fields and TLVs; return a body smpplib can parse safely."""
    pos = 0
    end = len(body)
    lengths: dict[str, int] = {}
    for fname in _mandatory_fields(obj):
        param = obj.params[fname]
        if pos == end and status != 0 and obj.is_response():
            return body[:pos]
        if param.type is int:
            size = param.size
            if pos + size > end:
                raise _Malformed(f"truncated at {fname}")
            lengths[fname] = int.from_bytes(body[pos:pos + size], "big")
            pos += size
        elif param.type is str:
            limit = getattr(param, "max", None) or getattr(param, "size", None) or 256
            nul = body.find(b"\x00", pos, min(end, pos + limit))
            if nul < 0:
                raise _Malformed(f"{fname} is not a NUL-terminated string of at most {limit} octets",
                                 consts.SMPP_ESME_RINVPARLEN)
            pos = nul + 1
        elif param.type is ptypes.ostr:
            size = lengths.get(param.len_field, 0)
            if pos + size > end:
                raise _Malformed(f"{fname} runs past the end of the PDU")
            pos += size
    mandatory = body[:pos]
    tlvs: list[bytes] = []
    while pos < end:
        if pos + 4 > end:
            raise _Malformed("truncated TLV header", consts.SMPP_ESME_RINVOPTPARSTREAM)
        tag, size = _TLV_HEADER.unpack_from(body, pos)
        value = body[pos + 4:pos + 4 + size]
        if len(value) != size:
            raise _Malformed(f"TLV 0x{tag:04x} runs past the end of the PDU", consts.SMPP_ESME_RINVOPTPARSTREAM)
        pos += 4 + size
        fname = _TLV_NAMES.get(tag)
        param = obj.params.get(fname) if fname else None
        if param is None or not obj.field_is_optional(fname):
            unknown.append((tag, value))
            continue
        if param.type is int:
            if size != param.size:
                raise _Malformed(f"TLV {fname} has length {size}, expected {param.size}",
                                 consts.SMPP_ESME_RINVPARLEN)
        elif param.type is str:
            # Many SMSCs omit the terminating NUL; smpplib strips one octet, so add it.
            if not value.endswith(b"\x00"):
                value += b"\x00"
            if b"\x00" in value[:-1]:
                value = value[:value.index(b"\x00") + 1]
        elif param.type is not ptypes.ostr:
            unknown.append((tag, value))
            continue
        tlvs.append(_TLV_HEADER.pack(tag, len(value)) + value)
    return mandatory + b"".join(tlvs)

