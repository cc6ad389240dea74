"""GSM-7 encoding, short_message decoding by data_coding, and concatenation UDH parsing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.gsm7 import ENCODE
from bridge.textcodec import (
    ConcatInfo,
    concat_udh,
    decode_gsm7,
    decode_short_message,
    encode_gsm7,
    gsm7_length,
    is_gsm7,
    split_udh,
)

GSM7_CHARS = "".join(sorted(ENCODE))


@st.composite
def concat_infos(draw):
    bits = draw(st.sampled_from([8, 16]))
    total = draw(st.integers(1, 255))
    return ConcatInfo(
        ref=draw(st.integers(0, (1 << bits) - 1)),
        total=total,
        seq=draw(st.integers(1, total)),
        ref_bits=bits,
    )


class TestIsGsm7:
    @pytest.mark.parametrize("text", ["", "Hello, world!", "@£$¥ÇΔ_§¿à", "[x]{y}€^~|\\\f"])
    def test_gsm_text(self, text):
        """Text made only of basic and extension characters is GSM-7."""
        assert is_gsm7(text)

    @pytest.mark.parametrize("text", ["ç", "`", "中", "😀", "★", "√", "\x1b", "é\u0301"])
    def test_other_text(self, text):
        """One character outside GSM 03.38 makes the whole text not GSM-7."""
        assert not is_gsm7("abc" + text)


class TestGsm7Length:
    @pytest.mark.parametrize(
        ("text", "septets"), [("", 0), ("abc", 3), ("€", 2), ("a[b]c", 7), ("\f", 2)]
    )
    def test_extension_counts_two(self, text, septets):
        """Extension characters take two septets, basic characters one."""
        assert gsm7_length(text) == septets


class TestEncodeGsm7:
    def test_unpacked_one_septet_per_octet(self):
        """Septets are unpacked, one per octet, with escape pairs for the extension table."""
        assert encode_gsm7("A@€") == b"\x41\x00\x1b\x65"

    def test_rejects_non_gsm_naming_position(self):
        """A character without a GSM code raises UnicodeEncodeError at its index."""
        with pytest.raises(UnicodeEncodeError) as info:
            encode_gsm7("ab中c")
        assert (info.value.start, info.value.end) == (2, 3)

    @settings(max_examples=300)
    @given(st.text(alphabet=GSM7_CHARS, max_size=400))
    def test_round_trip(self, text):
        """Decoding encoded GSM-7 text gives back exactly the text."""
        assert decode_gsm7(encode_gsm7(text)) == text


class TestDecodeGsm7:
    @pytest.mark.parametrize(
        ("data", "text"),
        [
            (b"\x1b\x41", "A"),  # unknown extension code: its basic character (TS 23.038)
            (b"\x1b\x1b", " "),  # reserved escape-escape: a space (TS 23.038)
            (b"ab\x1b", "ab\ufffd"),  # a trailing escape has nothing to escape
            (b"a\x80b", "a\ufffdb"),  # not a septet
            (b"\x1b\xff", "\ufffd"),
        ],
    )
    def test_odd_input(self, data, text):
        """Odd octets decode the way TS 23.038 asks, or to U+FFFD, without raising."""
        assert decode_gsm7(data) == text


class TestDecodeShortMessage:
    @pytest.mark.parametrize(
        ("data", "data_coding", "dc0", "text"),
        [
            (b"\x00\x1b\x65", 0, "gsm7", "@€"),
            (b"caf\xe9", 0, "latin1", "café"),
            (b"abc\x80", 0, "ascii", "abc\ufffd"),
            (b"abc\xe9", 1, "gsm7", "abc\ufffd"),
            (b"caf\xe9", 3, "gsm7", "café"),
            (b"\xd8\x3d\xde\x00\x4e\x2d", 8, "gsm7", "😀中"),
            ("退订".encode("gbk"), 0x0F, "gsm7", "退订"),
            (b"\x00\x1b\x65", 0xF0, "latin1", "@€"),
            (b"\x00\x1b\x65", 0xF3, "latin1", "@€"),
            (b"caf\xe9", 0xF4, "gsm7", "café"),
            (b"\x00\x41", 0xC0, "latin1", "@A"),
            (b"\x4e\x2d", 0xE0, "gsm7", "中"),
            (b"caf\xe9", 0x42, "gsm7", "café"),
            (b"\xd0", 6, "gsm7", "а"),
        ],
    )
    def test_table(self, data, data_coding, dc0, text):
        """Each data_coding decodes with its character set; dc0 gives data_coding 0's."""
        assert decode_short_message(data, data_coding, dc0) == text

    @pytest.mark.parametrize(
        ("data", "text"),
        [
            (b"\xd8\x3d\x00\x41", "\ufffdA"),  # high surrogate without its low half
            (b"\xde\x00\x00\x41", "\ufffdA"),  # low surrogate alone
            (b"\x00\x41\x00", "A\ufffd"),  # odd trailing octet
        ],
    )
    def test_broken_ucs2_does_not_raise(self, data, text):
        """A lone surrogate or an odd octet count in UCS-2 becomes U+FFFD, never an error."""
        assert decode_short_message(data, 8) == text

    def test_unknown_dc0_is_a_programming_error(self):
        """A dc0 meaning outside gsm7/latin1/ascii is a config error and raises."""
        with pytest.raises(ValueError, match="dc0"):
            decode_short_message(b"", 0, "utf8")

    @settings(max_examples=300)
    @given(
        st.binary(max_size=160),
        st.integers(min_value=0, max_value=255),
        st.sampled_from(["gsm7", "latin1", "ascii"]),
    )
    def test_never_raises(self, data, data_coding, dc0):
        """Any octets under any data_coding decode to a string."""
        assert isinstance(decode_short_message(data, data_coding, dc0), str)


class TestSplitUdh:
    def test_without_udhi_returns_message_unchanged(self):
        """Without esm_class 0x40 the octets are all payload, even if they look like a UDH."""
        message = b"\x05\x00\x03\x01\x02\x01hello"
        assert split_udh(message, 0x00) == (None, message)

    def test_concat_8bit(self):
        """IE 0x00 gives an 8-bit reference, total and sequence."""
        assert split_udh(b"\x05\x00\x03\x2a\x03\x02hi", 0x40) == (
            ConcatInfo(ref=0x2A, total=3, seq=2, ref_bits=8),
            b"hi",
        )

    def test_concat_16bit(self):
        """IE 0x08 gives a 16-bit reference, total and sequence."""
        assert split_udh(b"\x06\x08\x04\x12\x34\x02\x01hi", 0x43) == (
            ConcatInfo(ref=0x1234, total=2, seq=1, ref_bits=16),
            b"hi",
        )

    def test_skips_other_ies(self):
        """IEs other than concatenation (here a port address IE) are skipped."""
        udh = b"\x0b\x05\x04\x0b\x84\x23\xf0\x00\x03\x07\x02\x02"
        assert split_udh(udh + b"xy", 0x40) == (ConcatInfo(7, 2, 2, 8), b"xy")

    def test_udh_without_concat(self):
        """A UDH with no concatenation IE still gets stripped from the payload."""
        assert split_udh(b"\x04\x05\x02\x0b\x84payload", 0x40) == (None, b"payload")

    def test_last_concat_ie_wins(self):
        """When the concatenation IE repeats, the last occurrence counts (TS 23.040)."""
        udh = b"\x0a\x00\x03\x01\x02\x01\x00\x03\x09\x02\x02"
        assert split_udh(udh + b"z", 0x40) == (ConcatInfo(9, 2, 2, 8), b"z")

    @pytest.mark.parametrize(
        "message",
        [
            b"",
            b"\x05\x00\x03\x01",  # UDHL beyond the message
            b"\x03\x00\x03\x01\x02",  # IE data beyond the UDH
            b"\x01\x00rest",  # IE header cut by the UDH end
        ],
    )
    def test_malformed_returns_original(self, message):
        """A UDH that does not fit returns (None, the original octets) without raising."""
        assert split_udh(message, 0x40) == (None, message)

    @pytest.mark.parametrize(
        "udh",
        [
            b"\x05\x00\x03\x01\x02\x00",  # seq 0
            b"\x05\x00\x03\x01\x02\x03",  # seq beyond total
            b"\x05\x00\x03\x01\x00\x00",  # total 0
            b"\x04\x00\x02\x01\x02",  # wrong IE length
        ],
    )
    def test_invalid_concat_ie_is_ignored(self, udh):
        """An impossible concatenation IE is ignored, but the UDH is still removed."""
        assert split_udh(udh + b"p", 0x40) == (None, b"p")


class TestConcatUdh:
    @settings(max_examples=300)
    @given(concat_infos(), st.binary(max_size=134))
    def test_round_trip(self, info, payload):
        """split_udh reads back exactly what concat_udh wrote, and the payload after it."""
        assert split_udh(concat_udh(info) + payload, 0x40) == (info, payload)

    def test_formats(self):
        """8-bit is 05 00 03 ref total seq; 16-bit is 06 08 04 refHi refLo total seq."""
        assert concat_udh(ConcatInfo(0xAB, 3, 1, 8)) == bytes.fromhex("050003ab0301")
        assert concat_udh(ConcatInfo(0x1234, 3, 2, 16)) == bytes.fromhex("06080412340302")

    def test_bad_ref_bits(self):
        """Only 8- and 16-bit references exist."""
        with pytest.raises(ValueError, match="ref_bits"):
            concat_udh(ConcatInfo(1, 1, 1, 12))
