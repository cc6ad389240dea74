"""Encoding choice, segment boundaries, concatenation headers and reference counters."""

from __future__ import annotations

import pytest

from bridge.encoder import (
    ConcatRefCounter,
    EncodedMessage,
    MessageTooLongError,
    count_segments,
    encode_message,
)
from bridge.template import render
from bridge.textcodec import ConcatInfo, decode_short_message, split_udh

MAINLAND = "+8613800138000"
ABROAD = "+447700900123"


@pytest.fixture(name="refs")
def _refs() -> ConcatRefCounter:
    return ConcatRefCounter()


def encode(text: str, *, mainland: bool, concat: str = "udh8", refs=None) -> EncodedMessage:
    return encode_message(
        text,
        destination=MAINLAND if mainland else ABROAD,
        mainland=mainland,
        concat=concat,
        refs=refs or ConcatRefCounter(),
    )


def payloads(message: EncodedMessage) -> list[bytes]:
    return [split_udh(s.short_message, s.esm_class)[1] for s in message.segments]


def decoded(message: EncodedMessage) -> str:
    return "".join(decode_short_message(p, message.data_coding) for p in payloads(message))


class TestMainlandBoundaries:
    @pytest.mark.parametrize(
        ("body_chars", "segments"),
        [(62, 1), (63, 2), (126, 2), (127, 3)],
    )
    def test_signature_and_brackets_count(self, body_chars, segments):
        """[HUAWEI] counts 8, so 62/63 body characters are 70/71 and 126/127 are 134/135."""
        text = render("HUAWEI", "x" * body_chars, None)
        message = encode(text, mainland=True)
        assert len(message.segments) == message.billed_count == segments
        assert count_segments(text, mainland=True) == segments
        assert decoded(message) == text

    def test_70_is_one_full_segment(self):
        """Seventy characters fill one 140-octet segment with no UDH."""
        (segment,) = encode("中" * 70, mainland=True).segments
        assert len(segment.short_message) == 140
        assert (segment.esm_class, segment.ref, segment.total) == (0, None, 1)

    def test_parts_are_67_characters(self):
        """A split mainland message has 67 characters per part, the rest in the last."""
        assert [len(p) // 2 for p in payloads(encode("中" * 135, mainland=True))] == [67, 67, 1]

    def test_ascii_still_ucs2(self):
        """Mainland text is UCS-2 (data_coding 8) even when it is plain ASCII."""
        message = encode("[HUAWEI]Your code is 123456", mainland=True)
        assert (message.encoding, message.data_coding) == ("ucs2", 8)
        assert message.units == 27

    def test_500_char_template(self):
        """A 500-character template with its signature splits by the 67-character rule."""
        template = "中" * 491 + "${NUM_6}a"
        assert len(template) == 500
        text = render("HUAWEI", template, ["012345"])
        assert len(text) == 8 + 491 + 6 + 1
        message = encode(text, mainland=True)
        assert message.billed_count == len(message.segments) == 8  # ceil(506 / 67)
        assert decoded(message) == text


class TestGsm7Boundaries:
    @pytest.mark.parametrize(("septets", "segments"), [(160, 1), (161, 2), (306, 2), (307, 3)])
    def test_plain_text(self, septets, segments):
        """GSM-7 is 160 septets single and 153 per part: 160/161 and 306/307 flip."""
        message = encode("a" * septets, mainland=False)
        assert (message.encoding, message.data_coding) == ("gsm7", 0)
        assert len(message.segments) == message.billed_count == segments
        assert count_segments("a" * septets, mainland=False) == segments

    @pytest.mark.parametrize(("euros", "segments"), [(80, 1), (81, 2)])
    def test_extension_counts_two(self, euros, segments):
        """Eighty euro signs are 160 septets and fit one segment; eighty-one do not."""
        assert count_segments("€" * euros, mainland=False) == segments

    @pytest.mark.parametrize("char", ["€", "["])
    def test_escape_straddling_153rd_septet_moves_whole(self, char):
        """An extension character at septets 153-154 moves whole to the next part."""
        text = "a" * 152 + char + "b" * 10
        message = encode(text, mainland=False)
        first, second = payloads(message)
        assert first == b"a" * 152
        assert second[:1] == b"\x1b"
        assert not any(p.endswith(b"\x1b") for p in payloads(message))
        assert decoded(message) == text

    def test_escape_that_fits_stays(self):
        """An extension character ending exactly at septet 153 stays in the first part."""
        first, _ = payloads(encode("a" * 151 + "[" + "b" * 10, mainland=False))
        assert first == b"a" * 151 + b"\x1b\x3c"

    def test_straddle_can_add_a_segment(self):
        """306 septets with an escape pair across the boundary need 3 parts: the wire count."""
        text = "a" * 152 + "[" + "b" * 152
        message = encode(text, mainland=False)
        assert [len(p) for p in payloads(message)] == [152, 153, 1]
        assert message.billed_count == count_segments(text, mainland=False) == 3

    def test_unpacked_segment_size(self):
        """A GSM-7 part is the 6-octet UDH plus at most 153 unpacked septets."""
        message = encode("a" * 400, mainland=False)
        assert [len(s.short_message) for s in message.segments] == [159, 159, 6 + 94]


class TestUcs2Boundaries:
    @pytest.mark.parametrize(("chars", "segments"), [(70, 1), (71, 2), (134, 2), (135, 3)])
    def test_non_gsm_abroad(self, chars, segments):
        """Text with a non-GSM character goes abroad as UCS-2, 70 single / 67 per part."""
        text = "ç" * chars
        message = encode(text, mainland=False)
        assert (message.encoding, message.data_coding) == ("ucs2", 8)
        assert message.billed_count == count_segments(text, mainland=False) == segments

    def test_emoji_straddling_67th_unit_moves_whole(self):
        """An emoji at UTF-16 units 67-68 moves whole to the next part."""
        text = "x" * 66 + "😀" + "y" * 10
        message = encode(text, mainland=True)
        first, second = payloads(message)
        assert first == ("x" * 66).encode("utf-16-be")
        assert second[:4] == "😀".encode("utf-16-be")
        assert message.units == 78
        assert decoded(message) == text

    def test_emoji_straddle_reports_wire_count(self):
        """134 units with an emoji across the boundary go out as 3 parts, and 3 is reported."""
        text = "x" * 66 + "😀" + "y" * 66
        message = encode(text, mainland=True)
        assert len(text) == 133
        assert message.billed_count == len(message.segments) == 3
        assert count_segments(text, mainland=True) == 3

    @pytest.mark.parametrize(("emoji", "segments"), [(35, 1), (36, 2)])
    def test_emoji_take_two_units(self, emoji, segments):
        """Thirty-five emoji are 70 units and fit one segment; thirty-six do not."""
        assert count_segments("😀" * emoji, mainland=True) == segments

    def test_garble_prone_characters_sent_exactly(self):
        """Characters known to arrive garbled (¥★^_^&√※) are encoded exactly as given."""
        text = "Price ¥5 ★^_^&√※"
        message = encode(text, mainland=False)
        assert message.encoding == "ucs2"
        assert decoded(message) == text


class TestConcatModes:
    def test_udh8(self, refs):
        """8-bit mode prefixes 05 00 03 ref total seq and sets esm_class 0x40."""
        message = encode("a" * 200, mainland=False, refs=refs)
        assert [s.short_message[:6].hex() for s in message.segments] == [
            "050003000201",
            "050003000202",
        ]
        assert {s.esm_class for s in message.segments} == {0x40}
        assert [(s.seq, s.total, s.ref, s.sar) for s in message.segments] == [
            (1, 2, 0, False),
            (2, 2, 0, False),
        ]

    def test_udh16(self):
        """16-bit mode prefixes 06 08 04 refHi refLo total seq, 152 septets / 66 units per part."""
        refs = ConcatRefCounter(start=0x1234)
        message = encode("a" * 305, mainland=False, concat="udh16", refs=refs)
        assert [s.short_message[:7].hex() for s in message.segments] == [
            "06080412340301",
            "06080412340302",
            "06080412340303",
        ]
        assert [len(p) for p in payloads(message)] == [152, 152, 1]
        assert [len(p) for p in payloads(encode("中" * 133, mainland=True, concat="udh16"))] == [
            132,
            132,
            2,
        ]

    def test_udh16_wire_count(self):
        """With 16-bit references the count is the wire count, which can be one higher."""
        assert count_segments("a" * 306, mainland=False, concat="udh8") == 2
        assert count_segments("a" * 306, mainland=False, concat="udh16") == 3
        assert encode("a" * 306, mainland=False, concat="udh16").billed_count == 3

    def test_sar(self, refs):
        """SAR mode has no UDH and no 0x40; ref/total/seq are left for the TLVs."""
        message = encode("中" * 100, mainland=True, concat="sar", refs=refs)
        assert [len(s.short_message) for s in message.segments] == [134, 66]
        assert all(s.sar and s.esm_class == 0 for s in message.segments)
        assert [(s.seq, s.total) for s in message.segments] == [(1, 2), (2, 2)]
        assert len({s.ref for s in message.segments}) == 1

    @pytest.mark.parametrize("text", ["a" * 307, "中" * 135, "€" * 200, "x" * 66 + "😀" * 40])
    def test_sar_count_equals_udh8(self, text):
        """SAR parts are cut at the 8-bit UDH sizes, so the count never depends on the mode."""
        for mainland in (True, False):
            assert count_segments(text, mainland=mainland, concat="sar") == count_segments(
                text, mainland=mainland, concat="udh8"
            )

    def test_udh_round_trips_through_split_udh(self, refs):
        """split_udh reads back each segment's ref, total and seq."""
        for concat, bits in (("udh8", 8), ("udh16", 16)):
            message = encode("a" * 500, mainland=False, concat=concat, refs=refs)
            for segment in message.segments:
                info, _ = split_udh(segment.short_message, segment.esm_class)
                assert info == ConcatInfo(segment.ref, segment.total, segment.seq, bits)

    @pytest.mark.parametrize("concat", ["udh8", "udh16", "sar"])
    def test_single_segment_has_no_concat(self, concat, refs):
        """A one-part message carries no UDH, no SAR and takes no reference."""
        (segment,) = encode("hello", mainland=False, concat=concat, refs=refs).segments
        assert segment.short_message == b"hello"
        assert (segment.esm_class, segment.ref, segment.sar) == (0, None, False)
        assert refs.next(ABROAD, 8) == 0

    def test_unknown_mode(self):
        """An unknown concatenation mode is a ValueError naming the choices."""
        with pytest.raises(ValueError, match="udh8, udh16, sar"):
            encode("a", mainland=False, concat="udh7")


class TestEdgeCases:
    def test_empty_text_is_one_segment(self):
        """Empty text is one empty segment, billed once."""
        message = encode("", mainland=False)
        assert message.billed_count == 1
        assert message.segments[0].short_message == b""

    def test_lone_surrogate_rejected(self):
        """A lone surrogate (possible from JSON "\\ud83d") is refused, not sent broken."""
        with pytest.raises(ValueError, match="lone UTF-16 surrogate at index 2"):
            encode("ab\ud83d", mainland=True)

    def test_too_many_segments(self):
        """More than 255 parts cannot be numbered in a UDH or SAR TLV."""
        count_segments("中" * 255 * 67, mainland=True)
        with pytest.raises(MessageTooLongError, match="256 segments"):
            count_segments("中" * (255 * 67 + 1), mainland=True)

    def test_form_feed_is_gsm7(self):
        """Form feed is in the extension table, so it keeps a text GSM-7 at two septets."""
        message = encode("a\fb", mainland=False)
        assert message.encoding == "gsm7"
        assert message.segments[0].short_message == b"a\x1b\x0ab"


class TestConcatRefCounter:
    def test_rotates_per_destination(self, refs):
        """Consecutive long messages to one handset get consecutive references."""
        assert [refs.next("+1", 8) for _ in range(3)] == [0, 1, 2]

    def test_destinations_are_independent(self, refs):
        """Each destination has its own sequence."""
        refs.next("+1", 8)
        refs.next("+1", 8)
        assert refs.next("+2", 8) == 0

    @pytest.mark.parametrize(("bits", "last"), [(8, 255), (16, 65535)])
    def test_wraps(self, bits, last):
        """References wrap from 255 (8-bit) or 65535 (16-bit) back to 0."""
        refs = ConcatRefCounter(start=last)
        assert [refs.next("+1", bits), refs.next("+1", bits)] == [last, 0]

    def test_two_long_messages_differ(self, refs):
        """Two long messages to the same handset never share a reference."""
        one = encode_message("a" * 200, destination=ABROAD, mainland=False, refs=refs)
        two = encode_message("b" * 200, destination=ABROAD, mainland=False, refs=refs)
        assert one.segments[0].ref != two.segments[0].ref

    def test_memory_is_bounded(self):
        """Beyond capacity the least recently used destination is forgotten."""
        refs = ConcatRefCounter(capacity=2)
        refs.next("a", 8)
        refs.next("a", 8)
        refs.next("b", 8)
        refs.next("a", 8)  # "a" is now most recent
        refs.next("c", 8)  # evicts "b"
        assert refs.next("a", 8) == 3
        assert refs.next("b", 8) == 0

    def test_bad_bits(self, refs):
        """Only 8- and 16-bit references exist."""
        with pytest.raises(ValueError, match="bits"):
            refs.next("+1", 7)
