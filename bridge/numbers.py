"""Phone number normalisation to E.164 (PLATFORM_RULES "Recipients").

Numbers are ``+{CC}{NDC}{SN}``; a Chinese-mainland mobile number written without the
country code (11 digits starting with 1) gets ``+86``. ``00`` international prefixes
are accepted, and blanks or dashes inside the number are ignored. Anything else that is not 7-15 digits after the ``+`` is rejected.
"""

from __future__ import annotations

__all__ = ["InvalidNumberError", "normalise_number"]


class InvalidNumberError(ValueError):
    """Not a phone number; the message says why without echoing the whole number."""


def normalise_number(raw: str) -> str:
    """E.164 form of ``raw`` (``+8613800138000``) or InvalidNumberError."""
    text = raw.strip().replace(" ", "").replace("-", "")
    if not text:
        raise InvalidNumberError("empty number")
    if text.startswith("+"):
        digits = text[1:]
    elif text.startswith("00"):
        digits = text[2:]
    elif len(text) == 11 and text.startswith("1"):
        digits = "86" + text
    elif len(text) == 13 and text.startswith("861"):
        digits = text
    else:
        raise InvalidNumberError("not an international number (+CC...) or an 11-digit mainland mobile number")
    if not digits.isascii() or not digits.isdigit():
        raise InvalidNumberError("only digits may follow the +")
    if not 7 <= len(digits) <= 15:
        raise InvalidNumberError(f"{len(digits)} digits, E.164 allows 7 to 15")
    if digits[0] == "0":
        raise InvalidNumberError("a country code never starts with 0")
    return "+" + digits
