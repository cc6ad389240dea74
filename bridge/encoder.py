"""Choose the encoding of a message and cut it into SMPP short_message segments.

One split plan serves both billing (:func:`count_segments`) and the wire
(:func:`encode_message`), so the count reported to the customer is always the number of
segments actually submitted. For BMP text that is the platform's rule (70/67 UCS-2,
160/153 GSM-7 septets); when a surrogate pair or a GSM escape pair would straddle a
part boundary it moves whole to the next part, and the wire count is the count.

SAR parts (no UDH) are cut at the 8-bit-UDH sizes (153 septets / 67 units), so a
carrier's concatenation mode never changes the count. 16-bit UDH parts are one unit
smaller (152 / 66), as the UDH must fit in 140 octets; there the wire count can be one
higher than with 8-bit references, and that is what is reported.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

from bridge.fastinit import fast_init
from bridge.gsm7 import ENCODE
from bridge.textcodec import ESM_UDHI, ConcatInfo, concat_udh, is_gsm7

__all__ = [
    "CONCAT_MODES",
    "MAX_SEGMENTS",
    "ConcatRefCounter",
    "EncodedMessage",
    "MessageTooLongError",
    "Segment",
    "count_segments",
    "encode_message",
]

CONCAT_MODES: Final = ("udh8", "udh16", "sar")
MAX_SEGMENTS: Final = 255  # total and seq are one octet in the UDH and the SAR TLVs

# Capacities in octets of payload: GSM-7 unpacked is one octet per septet, UCS-2 two.
_GSM7_SINGLE, _UCS2_SINGLE = 160, 140
_PART_OCTETS: Final = {
    ("gsm7", "udh8"): 153,
    ("gsm7", "sar"): 153,
    ("gsm7", "udh16"): 152,
    ("ucs2", "udh8"): 134,
    ("ucs2", "sar"): 134,
    ("ucs2", "udh16"): 132,
}


class MessageTooLongError(ValueError):
    """The text needs more segments than a concatenation header can number."""


@fast_init
@dataclass(frozen=True, slots=True)
class Segment:
    """One submit_sm's worth of a message: what goes in short_message and beside it.

    With ``sar`` the caller adds the SAR TLVs (0x020C ref, 0x020E total, 0x020F seq)
    from ``ref``/``total``/``seq``; a single-segment message has ``ref`` None and needs
    neither UDH nor TLVs.
    """

    short_message: bytes  # UDH + payload (no UDH when sar)
    esm_class: int
    data_coding: int
    seq: int
    total: int
    ref: int | None
    sar: bool


@fast_init
@dataclass(frozen=True, slots=True)
class EncodedMessage:
    """A message ready for submit_sm, with the counts reported and billed."""

    encoding: str  # "gsm7" | "ucs2"
    data_coding: int  # 0 or 8
    units: int  # septets or UTF-16 code units on the wire, UDH excluded
    billed_count: int
    segments: tuple[Segment, ...]


class ConcatRefCounter:
    """Per-destination rotating concatenation references.

    Consecutive long messages to one handset get consecutive references, so a handset
    never joins parts of two messages (random references collide by the birthday
    rule). Memory is bounded: the least recently used destinations are forgotten and
    start again at ``start``; pass e.g. a clock-derived ``start`` to lower the chance
    of reuse across restarts.
    """

    __slots__ = ("_capacity", "_last", "_start")

    def __init__(self, *, capacity: int = 65536, start: int = 0) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._start = start
        self._last: OrderedDict[str, int] = OrderedDict()

    def next(self, destination: str, bits: int) -> int:
        """The next reference for ``destination``, within 0..255 or 0..65535."""
        if bits not in (8, 16):
            raise ValueError(f"bits must be 8 or 16, got {bits}")
        value = self._last.get(destination)
        value = self._start if value is None else value + 1
        self._last[destination] = value
        self._last.move_to_end(destination)
        if len(self._last) > self._capacity:
            self._last.popitem(last=False)
        return value % (1 << bits)


@fast_init
@dataclass(frozen=True, slots=True)
class _Plan:
    encoding: str
    data_coding: int
    units: int
    chunks: tuple[bytes, ...]


def _atoms(text: str, encoding: str) -> list[bytes]:
    """Indivisible pieces: a septet or escape pair, a UTF-16 unit or surrogate pair."""
    if encoding == "gsm7":
        return [ENCODE[char] for char in text]
    for index, char in enumerate(text):
        if "\ud800" <= char <= "\udfff":
            raise ValueError(f"text has a lone UTF-16 surrogate at index {index}")
    return [char.encode("utf-16-be") for char in text]


def _utf16(text: str) -> bytes:
    try:
        return text.encode("utf-16-be")
    except UnicodeEncodeError as exc:   # only a lone surrogate cannot be encoded
        raise ValueError(f"text has a lone UTF-16 surrogate at index {exc.start}") from None


def _pack(atoms: list[bytes], capacity: int) -> tuple[bytes, ...]:
    chunks: list[bytes] = []
    current = bytearray()
    for atom in atoms:
        if len(current) + len(atom) > capacity:
            chunks.append(bytes(current))
            current.clear()
        current += atom
    chunks.append(bytes(current))
    return tuple(chunks)


def _plan(text: str, mainland: bool, concat: str) -> _Plan:
    if concat not in CONCAT_MODES:
        raise ValueError(f"concat must be one of {', '.join(CONCAT_MODES)}, got {concat!r}")
    if not mainland and is_gsm7(text):
        encoding, data_coding, unit, single = "gsm7", 0, 1, _GSM7_SINGLE
    else:
        encoding, data_coding, unit, single = "ucs2", 8, 2, _UCS2_SINGLE
    if encoding == "ucs2":
        whole = _utf16(text)
        if len(whole) <= single:   # the common case: one segment, no atoms to split on
            return _Plan(encoding, data_coding, len(whole) // unit, (whole,))
    atoms = _atoms(text, encoding)
    octets = sum(map(len, atoms))
    if octets <= single:
        chunks: tuple[bytes, ...] = (b"".join(atoms),)
    else:
        chunks = _pack(atoms, _PART_OCTETS[encoding, concat])
    if len(chunks) > MAX_SEGMENTS:
        raise MessageTooLongError(
            f"text needs {len(chunks)} segments, more than the {MAX_SEGMENTS} a message can have"
        )
    return _Plan(encoding, data_coding, octets // unit, chunks)


def count_segments(text: str, *, mainland: bool, concat: str = "udh8") -> int:
    """Segments billed and sent for ``text``: the platform's rule, or the wire count.

    Mainland text is always UCS-2 (every character counts one, 70 single / 67 per
    part); elsewhere GSM-7 septets (160/153) when the whole text is GSM 03.38. Where a
    surrogate or escape pair cannot straddle a boundary, or with 16-bit references,
    the count is the number of segments actually sent.
    """
    return len(_plan(text, mainland, concat).chunks)


def encode_message(
    text: str,
    *,
    destination: str,
    mainland: bool,
    concat: str = "udh8",
    refs: ConcatRefCounter,
) -> EncodedMessage:
    """Encode ``text`` for ``destination`` as one or more submit_sm segments.

    A reference is taken from ``refs`` only for a multi-part message (16-bit for
    ``udh16`` and for SAR, whose ref TLV is two octets). Raises ``ValueError`` for a
    lone surrogate or an unknown ``concat``, :class:`MessageTooLongError` past 255 parts.
    """
    plan = _plan(text, mainland, concat)
    total = len(plan.chunks)
    if total == 1:
        segments = (
            Segment(
                short_message=plan.chunks[0],
                esm_class=0,
                data_coding=plan.data_coding,
                seq=1,
                total=1,
                ref=None,
                sar=False,
            ),
        )
    else:
        bits = 8 if concat == "udh8" else 16
        ref = refs.next(destination, bits)
        segments = tuple(
            _part(plan, chunk, seq, total, ref, bits, concat)
            for seq, chunk in enumerate(plan.chunks, start=1)
        )
    return EncodedMessage(
        encoding=plan.encoding,
        data_coding=plan.data_coding,
        units=plan.units,
        billed_count=total,
        segments=segments,
    )


def _part(
    plan: _Plan, chunk: bytes, seq: int, total: int, ref: int, bits: int, concat: str
) -> Segment:
    sar = concat == "sar"
    udh = b"" if sar else concat_udh(ConcatInfo(ref=ref, total=total, seq=seq, ref_bits=bits))
    return Segment(
        short_message=udh + chunk,
        esm_class=0 if sar else ESM_UDHI,
        data_coding=plan.data_coding,
        seq=seq,
        total=total,
        ref=ref,
        sar=sar,
    )
