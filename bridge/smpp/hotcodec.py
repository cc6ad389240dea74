"""A fast path for the four PDUs of every message: submit_sm, deliver_sm and their responses.

smpplib stays the codec of record (:mod:`bridge.smpp.codec`); it builds an object per
PDU and walks ~45 declared fields through getattr/setattr, which profiling showed as
most of the codec's CPU. This module reads smpplib's own field tables once at import and
packs or parses those four commands straight from them. Whenever a PDU holds anything
the table walk does not reproduce exactly (a value of an unexpected type, a frame the
checker would reject, a string that does not fit), it answers ``None`` and the caller
uses smpplib, so errors and quirks stay smpplib's. tests/unit/test_hotcodec.py proves
byte-for-byte (encode) and field-for-field (decode) agreement on generated PDUs.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import Enum
from typing import Any

from smpplib import command_codes, consts, ptypes

from bridge.fastinit import fast_init

__all__ = ["HOT_COMMANDS", "Decoded", "decode", "encode", "install"]

HOT_COMMANDS = ("submit_sm", "submit_sm_resp", "deliver_sm", "deliver_sm_resp")

_HEADER = struct.Struct(">LLLL")
_TLV_HEADER = struct.Struct(">HH")
_INT_FORMATS = {1: struct.Struct(">B"), 2: struct.Struct(">H"), 4: struct.Struct(">L")}
_MAX_U32 = 0xFFFFFFFF


class _Kind(Enum):
    INT = "int"
    STR = "str"
    OSTR = "ostr"
    SKIP = "skip"      # smpplib never writes it (flag TLVs)
    SLOW = "slow"      # a layout this module does not reproduce; any value means smpplib


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    kind: _Kind
    size: int = 0                  # INT: octets
    limit: int = 0                 # STR: smpplib's max (NUL included)
    tag: int = 0                   # TLVs only
    len_field: str | None = None   # OSTR mandatory: the field holding its length


@dataclass(frozen=True, slots=True)
class _Layout:
    command: str
    command_id: int
    tlvs: tuple[_Field, ...]                # in smpplib's generation order
    names: frozenset[str]
    defaults: dict[str, Any]                # prototype values that are not None
    length_field: str | None                # set by smpplib's prep() from short_message
    tlv_order: dict[str, int]               # TLV name -> index in ``tlvs``
    # The mandatory fields as plain tuples for the decode loop (name, step, size, limit,
    # length field), a step code per field: attribute and enum lookups were half of
    # decode's time; ``tlv_plan`` holds the TLVs smpplib parses for this command.
    read_plan: tuple[tuple[str, int, int, int, str], ...]
    tlv_plan: dict[int, tuple[str, int, int]]   # tag -> (name, step, size)
    # For encode: (name, step, size, first integer too large, limit, default, is the length field).
    write_plan: tuple[tuple[str, int, int, int, int, Any, bool], ...]


# Decode steps of :attr:`_Layout.read_plan` and :attr:`_Layout.tlv_plan`.
_BYTE, _UINT, _CSTR, _OCTETS, _DECLINE, _LOOSE_OCTETS = range(6)


def _step(field: _Field) -> int:
    if field.kind is _Kind.INT:
        return _BYTE if field.size == 1 else _UINT
    if field.kind is _Kind.STR:
        return _CSTR
    if field.kind is _Kind.OSTR:
        # A mandatory octet string needs its length field; without one only its absence
        # at the end of the body is read (as smpplib does), anything else declines.
        return _OCTETS if field.tag or field.len_field is not None else _LOOSE_OCTETS
    return _DECLINE


def _kind(param: Any) -> _Kind:
    if param.type is int and getattr(param, "size", None) in _INT_FORMATS:
        return _Kind.INT
    if param.type is str:
        return _Kind.STR if getattr(param, "max", None) and not hasattr(param, "size") else _Kind.SLOW
    if param.type is ptypes.ostr:
        return _Kind.OSTR
    if param.type is ptypes.flag:
        return _Kind.SKIP
    return _Kind.SLOW


def _layout(name: str, proto: Any) -> _Layout:
    """Read smpplib's field tables of one blank PDU object (see codec._fresh)."""
    mandatory: list[_Field] = []
    tlvs: list[_Field] = []
    for fname in proto.params_order:
        param = proto.params[fname]
        kind = _kind(param)
        field = _Field(fname, kind, getattr(param, "size", 0) or 0, getattr(param, "max", 0) or 0,
                       consts.OPTIONAL_PARAMS.get(fname, 0), getattr(param, "len_field", None))
        (tlvs if proto.field_is_optional(fname) else mandatory).append(field)
    by_tag = {}
    for field in tlvs:
        # codec._checked_body hands smpplib only int, str and ostr TLVs; the rest stay unknown.
        param = proto.params[field.name]
        if field.tag and param.type in (int, str, ptypes.ostr):
            by_tag[field.tag] = field
    defaults = {}
    for fname, param in proto.params.items():
        value = getattr(proto, fname, None)
        if value is not None:
            if param.type is str and isinstance(value, bytes | bytearray):
                value = bytes(value).decode("latin-1")
            defaults[fname] = value
    if any(field.name in defaults for field in tlvs):
        raise RuntimeError(f"smpplib {name}: a TLV with a default value; the fast path assumes none")
    read_plan = tuple((f.name, _step(f), f.size, f.limit, f.len_field or "") for f in mandatory)
    tlv_plan = {tag: (f.name, _UINT if f.kind is _Kind.INT else _step(f), f.size) for tag, f in by_tag.items()}
    length_field = "sm_length" if callable(getattr(proto, "prep", None)) else None
    write_steps = {_Kind.INT: _UINT, _Kind.STR: _CSTR, _Kind.OSTR: _OCTETS}
    write_plan = tuple((f.name, write_steps.get(f.kind, _DECLINE), f.size, 1 << (8 * f.size), f.limit,
                        defaults.get(f.name), f.name == length_field) for f in mandatory)
    return _Layout(name, command_codes.get_command_code(name), tuple(tlvs),
                   frozenset(proto.params), defaults, length_field,
                   {field.name: i for i, field in enumerate(tlvs)}, read_plan, tlv_plan, write_plan)


_LAYOUTS: dict[str, _Layout] = {}
_BY_ID: dict[int, _Layout] = {}


def install(fresh: Any) -> None:
    """Build the layouts from ``fresh(name)``, codec's blank smpplib PDU objects."""
    for name in HOT_COMMANDS:
        layout = _layout(name, fresh(name))
        _LAYOUTS[name] = layout
        _BY_ID[layout.command_id] = layout


# -- encode ---------------------------------------------------------------------------------

def encode(command: str, sequence: Any, status: Any, fields: dict[str, Any]) -> bytes | None:
    """The bytes smpplib would generate for this PDU, or ``None`` to let smpplib do it."""
    layout = _LAYOUTS.get(command)
    if layout is None or type(sequence) is not int or type(status) is not int:
        return None
    if not (0 <= sequence <= _MAX_U32 and 0 <= status <= _MAX_U32):
        return None
    for key in fields:
        if key not in layout.names:
            return None   # smpplib would set it as an attribute, maybe one of its own
    defaults = layout.defaults
    parts: list[bytes] = []
    length_field = layout.length_field
    if length_field is not None:
        # smpplib's prep(): sm_length follows short_message; both with message_payload is an error.
        short = fields.get("short_message", defaults.get("short_message"))
        if short:
            if type(short) is not bytes or len(short) > 255 or fields.get("message_payload"):
                return None
            sm_length = len(short)
        else:
            sm_length = 0
    for name, step, size, bound, limit, default, is_length in layout.write_plan:
        value: Any = sm_length if is_length else fields.get(name, default)
        if step == _UINT:
            if not value:
                parts.append(b"\x00")   # smpplib writes one NUL for any false value
            elif type(value) is int and 0 < value < bound:
                parts.append(value.to_bytes(size, "big"))
            else:
                return None
        elif step == _CSTR:
            if not value:
                parts.append(b"\x00")
            elif type(value) is str:
                if len(value) >= limit:
                    value = value[:limit - 1]
                try:
                    parts.append(value.encode("latin-1") + b"\x00")
                except UnicodeEncodeError:
                    return None
            else:
                return None
        elif step == _OCTETS:
            if value:
                if type(value) is not bytes:
                    return None
                parts.append(value)
        else:
            return None
    # TLVs have no defaults (checked at import): only those in ``fields``, in smpplib's order.
    order = layout.tlv_order
    present = sorted(order[key] for key in fields if key in order)
    tlvs = layout.tlvs
    for index in present:
        field = tlvs[index]
        value = fields[field.name]
        if value is None:
            continue
        kind = field.kind
        if kind is _Kind.INT:
            if type(value) is not int or not 0 <= value < (1 << (8 * field.size)):
                return None
            parts.append(_TLV_HEADER.pack(field.tag, field.size) + value.to_bytes(field.size, "big"))
        elif kind is _Kind.STR:
            if not value:
                continue
            if type(value) is not str:
                return None
            if len(value) > field.limit:
                value = value[:field.limit - 1]
            # smpplib declares the length in characters but writes UTF-8; kept as it does.
            try:
                raw = value.encode("utf-8") + b"\x00"
            except UnicodeEncodeError:
                return None
            parts.append(_TLV_HEADER.pack(field.tag, len(value) + 1) + raw)
        elif kind is _Kind.OSTR:
            if not value:
                continue
            if type(value) is not bytes or len(value) > 0xFFFF:
                return None
            parts.append(_TLV_HEADER.pack(field.tag, len(value)) + value)
        elif kind is _Kind.SLOW:
            return None
    body = b"".join(parts)
    return _HEADER.pack(len(body) + 16, layout.command_id, status, sequence) + body


# -- decode ---------------------------------------------------------------------------------

@fast_init
@dataclass(frozen=True, slots=True)
class Decoded:
    """What codec.decode builds a Pdu from."""

    command: str
    sequence: int
    status: int
    fields: dict[str, Any]
    unknown_tlvs: tuple[tuple[int, bytes], ...]


def decode(frame: bytes, max_length: int) -> Decoded | None:
    """Fields as codec's smpplib path decodes them, or ``None`` to let that path decide."""
    end = len(frame)
    if end <= 16:
        return None
    length, command_id, status, sequence = _HEADER.unpack_from(frame)
    layout = _BY_ID.get(command_id)
    if layout is None or length != end or length > max_length:
        return None
    fields = dict(layout.defaults)
    pos = 16
    # smpplib stops reading mandatory fields where its (checked) body ends, so an empty
    # octet string last among them exists only if a TLV it parses follows.
    empty_ostr = None
    for name, step, size, limit, len_field in layout.read_plan:
        if empty_ostr is not None:
            return None
        if pos == end:
            if step in (_OCTETS, _LOOSE_OCTETS) and not fields.get(len_field, 0):
                break
            return None
        if step == _BYTE:
            fields[name] = frame[pos]
            pos += 1
        elif step == _CSTR:
            stop = pos + limit
            nul = frame.find(b"\x00", pos, stop if stop < end else end)
            if nul < 0:
                return None
            fields[name] = frame[pos:nul].decode("latin-1")
            pos = nul + 1
        elif step == _UINT:
            nxt = pos + size
            if nxt > end:
                return None
            fields[name] = int.from_bytes(frame[pos:nxt], "big")
            pos = nxt
        elif step == _OCTETS:
            nxt = pos + fields.get(len_field, 0)
            if nxt > end:
                return None
            if nxt == pos:
                empty_ostr = name
            else:
                fields[name] = frame[pos:nxt]
            pos = nxt
        else:
            return None
    unknown: list[tuple[int, bytes]] = []
    tlv_plan = layout.tlv_plan
    parsed_tlvs = 0
    while pos < end:
        if pos + 4 > end:
            return None
        tag, size = _TLV_HEADER.unpack_from(frame, pos)
        pos += 4
        nxt = pos + size
        if nxt > end:
            return None
        value = frame[pos:nxt]
        pos = nxt
        known = tlv_plan.get(tag)
        if known is None:
            unknown.append((tag, value))
            continue
        parsed_tlvs += 1
        name, step, want = known
        if step == _UINT:
            if size != want:
                return None
            fields[name] = int.from_bytes(value, "big")
        elif step == _DECLINE:
            return None
        elif step == _CSTR:
            # codec adds a missing NUL and cuts at the first one; smpplib drops the NUL.
            fields[name] = value.split(b"\x00", 1)[0].decode("latin-1")
        else:
            fields[name] = value
    if empty_ostr is not None and parsed_tlvs:
        fields[empty_ostr] = b""
    return Decoded(layout.command, sequence, status, fields, tuple(unknown))
