"""Destination checks and number normalisation, driven by the profiles' numbering data.

The simulator accepts what a real SMSC of that route would accept: an 11-digit
mainland mobile number (with or without ``86``/``+86``) on the four mainland
carriers, any 6..15 digit E.164 number on the international route. It does not
check the prefix against the carrier: numbers are portable since 2019.
"""

from __future__ import annotations

from collections.abc import Mapping

from carriers.profiles import CarrierProfile, Numbering

__all__ = ["national_number", "valid_destination"]


def _digits(address: str) -> str:
    text = address.strip()
    if text.startswith("+"):
        text = text[1:]
    elif text.startswith("00"):
        text = text[2:]
    return text


def national_number(address: str, country_code: str | None, national_length: int = 11) -> str:
    """``address`` without ``+``/``00`` and, for a national route, without its country code."""
    text = _digits(address)
    if country_code and text.startswith(country_code) and len(text) == len(country_code) + national_length:
        text = text[len(country_code):]
    return text


def valid_destination(address: str, profile: CarrierProfile, numbering: Mapping[str, Numbering]) -> bool:
    """True when an SMSC of ``profile`` would accept ``address`` as a destination."""
    plan = numbering.get(profile.country_code)
    if plan is None:
        digits = _digits(address)
        return digits.isdigit() and 6 <= len(digits) <= 15
    number = national_number(address, plan.country_code, plan.national_length)
    if not number.isdigit() or len(number) != plan.national_length:
        return False
    if any(number.startswith(p) for p in plan.iot_prefixes):
        return False
    return number.startswith("1")
