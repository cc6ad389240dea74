"""Text <-> short_message octets, and the concatenation header of long messages.

Decoding never raises: what a carrier sends (MO, receipts, the simulator's view of a
submit) is shown as well as it can be, with U+FFFD where octets make no sense. Encoding
GSM-7 raises ``UnicodeEncodeError`` (a ``ValueError``) naming the first character that
has no GSM 03.38 code, so callers can choose UCS-2 with :func:`is_gsm7` first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from bridge.gsm7 import DECODE_BASIC, DECODE_EXTENSION, ENCODE, ESCAPE

__all__ = [
    "DC0_MEANINGS",
    "ESM_UDHI",
    "ConcatInfo",
    "concat_udh",
    "decode_gsm7",
    "decode_short_message",
    "encode_gsm7",
    "gsm7_length",
    "is_gsm7",
    "split_udh",
]

ESM_UDHI: Final = 0x40
DC0_MEANINGS: Final = ("gsm7", "latin1", "ascii")

_REPLACEMENT: Final = "\ufffd"
_GSM7_CHARS: Final = frozenset(ENCODE)
_IEI_CONCAT8: Final = 0x00
_IEI_CONCAT16: Final = 0x08


def is_gsm7(text: str) -> bool:
    """Whether every character has a GSM 03.38 code (basic or extension table)."""
    return _GSM7_CHARS.issuperset(text)


def gsm7_length(text: str) -> int:
    """Septets on the wire; an extension character takes two (escape + code)."""
    return len(encode_gsm7(text))


def encode_gsm7(text: str) -> bytes:
    """Unpacked septets, one per octet; raises ``UnicodeEncodeError`` if not GSM-7."""
    out = bytearray()
    for index, char in enumerate(text):
        septets = ENCODE.get(char)
        if septets is None:
            raise UnicodeEncodeError(
                "gsm7", text, index, index + 1, "character not in the GSM 03.38 alphabet"
            )
        out += septets
    return bytes(out)


def decode_gsm7(data: bytes) -> str:
    """Decode unpacked septets the way TS 23.038 tells a handset to display them.

    An unknown extension code shows its basic-table character, escape-escape shows a
    space (both per the spec); octets above 0x7F and a trailing escape become U+FFFD.
    """
    out: list[str] = []
    index, size = 0, len(data)
    while index < size:
        code = data[index]
        index += 1
        if code == ESCAPE:
            if index == size:
                out.append(_REPLACEMENT)
                break
            code = data[index]
            index += 1
            if code in DECODE_EXTENSION:
                out.append(DECODE_EXTENSION[code])
            elif code == ESCAPE:
                out.append(" ")
            else:
                out.append(DECODE_BASIC.get(code, _REPLACEMENT))
        else:
            out.append(DECODE_BASIC.get(code, _REPLACEMENT))
    return "".join(out)


def _decode_dc0(data: bytes, dc0: str) -> str:
    if dc0 == "gsm7":
        return decode_gsm7(data)
    if dc0 == "latin1":
        return data.decode("latin-1")
    return data.decode("ascii", errors="replace")


def decode_short_message(data: bytes, data_coding: int, dc0: str = "gsm7") -> str:
    """Decode a payload (UDH already removed) by its SMPP data_coding; never raises on data.

    ``dc0`` is the carrier's meaning of data_coding 0 (SMSCs disagree). 0x0F is GBK, as
    Chinese gateways use it (CMPP Msg_Fmt 15). 0xC0-0xFF follow the GSM 03.38 coding
    groups: 0xE0-0xEF UCS-2, 0xF4-0xF7/0xFC-0xFF 8-bit data, the rest GSM-7. 8-bit data
    and unknown codings fall back to Latin-1, which maps every octet to something.
    """
    if dc0 not in DC0_MEANINGS:
        raise ValueError(f"dc0 must be one of {', '.join(DC0_MEANINGS)}, got {dc0!r}")
    if data_coding == 0x00:
        return _decode_dc0(data, dc0)
    if data_coding == 0x01:
        return data.decode("ascii", errors="replace")
    if data_coding == 0x06:
        return data.decode("iso8859_5", errors="replace")
    if data_coding == 0x07:
        return data.decode("iso8859_8", errors="replace")
    if data_coding == 0x08 or 0xE0 <= data_coding <= 0xEF:
        # "replace" keeps surrogate pairs whole and turns a lone surrogate or an odd
        # trailing octet into U+FFFD, so the result is always valid Unicode.
        return data.decode("utf-16-be", errors="replace")
    if data_coding == 0x0F:
        return data.decode("gb18030", errors="replace")
    if 0xC0 <= data_coding <= 0xDF or (data_coding >= 0xF0 and not data_coding & 0x04):
        return decode_gsm7(data)
    return data.decode("latin-1")


@dataclass(frozen=True, slots=True)
class ConcatInfo:
    """One segment's place in a concatenated message, from or for its UDH."""

    ref: int
    total: int
    seq: int
    ref_bits: int  # 8 or 16


def concat_udh(info: ConcatInfo) -> bytes:
    """The whole UDH (with its length octet) carrying one concatenation IE."""
    if info.ref_bits == 8:
        return bytes((0x05, _IEI_CONCAT8, 0x03, info.ref, info.total, info.seq))
    if info.ref_bits == 16:
        return bytes(
            (0x06, _IEI_CONCAT16, 0x04, *info.ref.to_bytes(2, "big"), info.total, info.seq)
        )
    raise ValueError(f"ref_bits must be 8 or 16, got {info.ref_bits}")


def _concat_ie(iei: int, data: bytes) -> ConcatInfo | None:
    if iei == _IEI_CONCAT8 and len(data) == 3:
        info = ConcatInfo(ref=data[0], total=data[1], seq=data[2], ref_bits=8)
    elif iei == _IEI_CONCAT16 and len(data) == 4:
        info = ConcatInfo(
            ref=int.from_bytes(data[:2], "big"), total=data[2], seq=data[3], ref_bits=16
        )
    else:
        return None
    # TS 23.040 9.2.3.24.1: a receiver ignores the IE when seq is 0 or beyond total.
    if info.total == 0 or not 1 <= info.seq <= info.total:
        return None
    return info


def split_udh(short_message: bytes, esm_class: int) -> tuple[ConcatInfo | None, bytes]:
    """Separate the UDH (when esm_class has UDHI) from the payload.

    Other IEs are skipped; if a concatenation IE repeats, the last one counts (TS
    23.040). A UDH that overruns its message returns ``(None, short_message)``
    unchanged, so the caller still has every octet it was given.
    """
    if not esm_class & ESM_UDHI or not short_message:
        return None, short_message
    end = 1 + short_message[0]
    if end > len(short_message):
        return None, short_message
    concat: ConcatInfo | None = None
    index = 1
    while index < end:
        if index + 2 > end:
            return None, short_message
        iei, length = short_message[index], short_message[index + 1]
        data_end = index + 2 + length
        if data_end > end:
            return None, short_message
        if iei in (_IEI_CONCAT8, _IEI_CONCAT16):
            concat = _concat_ie(iei, short_message[index + 2 : data_end])
        index = data_end
    return concat, short_message[end:]
