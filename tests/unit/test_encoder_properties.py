"""Properties of the segmenter over arbitrary Unicode text (hypothesis)."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.encoder import (
    CONCAT_MODES,
    ConcatRefCounter,
    EncodedMessage,
    count_segments,
    encode_message,
)
from bridge.gsm7 import ENCODE
from bridge.textcodec import ConcatInfo, decode_short_message, split_udh

SETTINGS = settings(max_examples=300, deadline=None)

# Arbitrary text rarely lands a pair on a boundary, so mix in alphabets that often do.
texts = st.one_of(
    st.text(max_size=500),
    st.text(alphabet=sorted(ENCODE), max_size=700),
    st.text(alphabet="a€[|中😀🎉", max_size=400),
    st.text(alphabet="ab€", min_size=150, max_size=320),
    st.text(alphabet="x😀", min_size=60, max_size=150),
)
modes = st.sampled_from(CONCAT_MODES)

PART_UNITS = {("gsm7", "udh16"): 152, ("gsm7", "udh8"): 153, ("gsm7", "sar"): 153}
PART_UNITS |= {("ucs2", "udh16"): 66, ("ucs2", "udh8"): 67, ("ucs2", "sar"): 67}
SINGLE_UNITS = {"gsm7": 160, "ucs2": 70}


def encode(text: str, mainland: bool, concat: str) -> EncodedMessage:
    return encode_message(
        text, destination="+100", mainland=mainland, concat=concat, refs=ConcatRefCounter()
    )


def split(message: EncodedMessage) -> list[tuple[ConcatInfo | None, bytes]]:
    return [split_udh(s.short_message, s.esm_class) for s in message.segments]


def first_atom_units(payload: bytes, encoding: str) -> int:
    """Units of the indivisible piece a payload starts with (escape or surrogate pair)."""
    if encoding == "gsm7":
        return 2 if payload[:1] == b"\x1b" else 1
    return 2 if 0xD8 <= payload[0] <= 0xDB else 1


class TestSegmentProperties:
    @SETTINGS
    @given(texts, st.booleans(), modes)
    def test_round_trip(self, text, mainland, concat):
        """Decoding every segment's payload and joining them gives back exactly the input."""
        message = encode(text, mainland, concat)
        joined = "".join(
            decode_short_message(payload, message.data_coding) for _, payload in split(message)
        )
        assert joined == text

    @SETTINGS
    @given(texts, st.booleans(), modes)
    def test_fits_one_sms(self, text, mainland, concat):
        """No segment exceeds 140 octets on the air: UCS-2 directly, GSM-7 once packed."""
        message = encode(text, mainland, concat)
        for segment, (_, payload) in zip(message.segments, split(message), strict=True):
            udh = len(segment.short_message) - len(payload)
            if message.encoding == "ucs2":
                assert len(segment.short_message) <= 140
            else:
                limit = 160 if message.billed_count == 1 else PART_UNITS["gsm7", concat]
                assert len(payload) <= limit
                udh_septets = math.ceil(udh * 8 / 7)  # UDH plus fill bits
                assert (udh_septets + len(payload)) * 7 <= 140 * 8

    @SETTINGS
    @given(texts, st.booleans(), modes)
    def test_count_is_rule_or_wire_count(self, text, mainland, concat):
        """The count is the platform rule unless a pair straddles a boundary, and always the wire count."""
        message = encode(text, mainland, concat)
        count = count_segments(text, mainland=mainland, concat=concat)
        assert message.billed_count == len(message.segments) == count
        single, part = SINGLE_UNITS[message.encoding], PART_UNITS[message.encoding, concat]
        rule = 1 if message.units <= single else math.ceil(message.units / part)
        bmp = all(ord(char) <= 0xFFFF for char in text)
        if message.encoding == "ucs2" and bmp:
            assert message.units == len(text)
            assert count == rule
        if message.encoding == "gsm7" and all(len(ENCODE[char]) == 1 for char in text):
            assert count == rule
        assert count >= rule
        # Wire count: every part but the last is full, up to one indivisible piece.
        payloads = [payload for _, payload in split(message)]
        unit = 1 if message.encoding == "gsm7" else 2
        for this, following in zip(payloads, payloads[1:], strict=False):
            room = part - len(this) // unit
            assert room < first_atom_units(following, message.encoding)

    @SETTINGS
    @given(texts, st.booleans(), modes)
    def test_pairs_never_split(self, text, mainland, concat):
        """No segment starts with a lone low surrogate or ends with a high one or an escape."""
        message = encode(text, mainland, concat)
        for _, payload in split(message):
            if not payload:
                continue
            if message.encoding == "ucs2":
                assert not 0xDC <= payload[0] <= 0xDF
                assert not 0xD8 <= payload[-2] <= 0xDB
            else:
                assert payload[-1] != 0x1B

    @SETTINGS
    @given(texts, st.booleans(), modes)
    def test_headers_round_trip(self, text, mainland, concat):
        """split_udh reads back one shared reference, the total and seq 1..total."""
        message = encode(text, mainland, concat)
        total = message.billed_count
        seqs = [segment.seq for segment in message.segments]
        assert seqs == list(range(1, total + 1))
        assert {segment.total for segment in message.segments} == {total}
        assert len({segment.ref for segment in message.segments}) == 1
        for segment, (info, _) in zip(message.segments, split(message), strict=True):
            if total == 1 or concat == "sar":
                assert info is None
                assert segment.sar == (total > 1)
            else:
                bits = 8 if concat == "udh8" else 16
                assert info == ConcatInfo(segment.ref, total, segment.seq, bits)
