"""The GSM 03.38 tables: complete, unambiguous and free of smpplib's known defects."""

from __future__ import annotations

import unicodedata

import pytest
from gsm0338.charset import BASIC_CHARACTER_SET, BASIC_CHARACTER_SET_EXTENSION

from bridge.gsm7 import BASIC, DECODE_BASIC, ENCODE, ESCAPE, EXTENSION


class TestBasicTable:
    def test_has_128_codes(self):
        """The basic table covers every septet value 0x00-0x7F."""
        assert len(BASIC) == 128

    def test_characters_are_distinct(self):
        """No character has two codes, so decoding what was encoded is exact."""
        assert len(set(BASIC)) == 128

    def test_agrees_with_gsm0338_except_escape(self):
        """Every code matches the gsm0338 package's table, whose 0x1B entry we drop."""
        for code, name in BASIC_CHARACTER_SET.items():
            if code == ESCAPE:
                continue
            assert DECODE_BASIC[code] == unicodedata.lookup(name), hex(code)

    def test_escape_is_not_a_character(self):
        """U+001B has no code: sent as 0x1B a handset would read it as the escape prefix."""
        assert ESCAPE not in DECODE_BASIC
        assert "\x1b" not in ENCODE

    @pytest.mark.parametrize(
        ("code", "char"),
        [(0x5F, "§"), (0x60, "¿"), (0x11, "_"), (0x02, "$"), (0x24, "¤"), (0x00, "@"), (0x09, "Ç")],
    )
    def test_codes_smpplib_gets_wrong(self, code, char):
        """The codes smpplib and others commonly mis-map hold the TS 23.038 characters."""
        assert DECODE_BASIC[code] == char
        assert ENCODE[char] == bytes((code,))

    def test_backtick_is_not_gsm7(self):
        """The backtick has no GSM 03.38 code, so text with it goes out as UCS-2."""
        assert "`" not in ENCODE


class TestExtensionTable:
    def test_agrees_with_gsm0338(self):
        """The extension table matches the gsm0338 package's default single-shift table."""
        expected = {
            code: unicodedata.lookup(name) for code, name in BASIC_CHARACTER_SET_EXTENSION.items()
        }
        assert dict(EXTENSION) == expected

    @pytest.mark.parametrize("char", ["\f", "^", "{", "}", "\\", "[", "~", "]", "|", "€"])
    def test_encodes_as_escape_pair(self, char):
        """Each extension character is the escape octet followed by its code."""
        septets = ENCODE[char]
        assert len(septets) == 2
        assert septets[0] == ESCAPE
        assert EXTENSION[septets[1]] == char

    def test_no_overlap_with_basic(self):
        """No character is in both tables, so each has exactly one encoding."""
        assert not set(EXTENSION.values()) & set(BASIC)
