"""GSM 03.38 (3GPP TS 23.038) default alphabet and its extension table.

Written out here rather than taken from smpplib, whose table puts the backtick at 0x5F
(it is the section sign) and lacks form feed. The ``gsm0338`` package agrees with this
table except that it maps U+001B to 0x1B, which a handset reads as the escape prefix;
here 0x1B is never the code of a character. ``tests/unit/test_gsm7.py`` checks both.

Septets are unpacked, one per octet, the usual SMPP convention for data_coding 0; an
extension character is the escape octet 0x1B followed by its code.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

__all__ = [
    "BASIC",
    "DECODE_BASIC",
    "DECODE_EXTENSION",
    "ENCODE",
    "ESCAPE",
    "EXTENSION",
]

ESCAPE: Final = 0x1B

# Index = septet code. 0x1B is the escape prefix, not a character (placeholder "\x1b").
BASIC: Final = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)

# Single-shift extension table: code after the escape octet -> character.
EXTENSION: Final = MappingProxyType(
    {
        0x0A: "\f",
        0x14: "^",
        0x28: "{",
        0x29: "}",
        0x2F: "\\",
        0x3C: "[",
        0x3D: "~",
        0x3E: "]",
        0x40: "|",
        0x65: "€",
    }
)

DECODE_BASIC: Final = MappingProxyType(
    {code: char for code, char in enumerate(BASIC) if code != ESCAPE}
)
DECODE_EXTENSION: Final = EXTENSION

# Character -> its unpacked octets (one septet, or escape + septet).
ENCODE: Final = MappingProxyType(
    {
        **{char: bytes((code,)) for code, char in DECODE_BASIC.items()},
        **{char: bytes((ESCAPE, code)) for code, char in EXTENSION.items()},
    }
)
