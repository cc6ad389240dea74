"""Route a recipient number to a carrier by number segment, from the carrier profiles.

The segments come from ``carriers/profiles.toml`` (the simulator reads the same file),
so routing has no carrier ids in code. Numbers are accepted as:

* ``+{CC}{national}``: E.164, 7 to 15 digits after the ``+``;
* ``00{CC}{national}``: the international call prefix, read as ``+``;
* ``86`` followed by an 11-digit mainland mobile number (13 digits, ``861...``);
* an 11-digit mainland mobile number starting with ``1`` (``+86`` is assumed).

Spaces and hyphens between digits are ignored. Then, in this order: the override
table (ported numbers, keyed by any accepted form) wins; mainland numbers starting
with an IoT prefix are refused as data-only; mainland numbers must have the national
length and match a carrier segment (longest prefix wins); numbers of a country code
no profile claims go to the ``country_code = "*"`` profile.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from bridge.fastinit import fast_init
from bridge.numbers import InvalidNumberError, normalise_number
from carriers.profiles import CarrierProfile, Numbering

__all__ = ["Route", "Router", "RoutingError", "normalise"]

_CATCH_ALL = "*"


class RoutingError(ValueError):
    """No carrier may take this number; the message says why (never the whole number)."""


@fast_init
@dataclass(frozen=True, slots=True)
class Route:
    carrier: str
    number: str      # E.164 with the leading +
    mainland: bool   # inside a country code a profile claims (not the catch-all route)


def normalise(raw: str) -> str:
    """E.164 form (``+8613800138000``) of an accepted spelling, or :class:`RoutingError`."""
    try:
        return normalise_number(raw)
    except InvalidNumberError as exc:
        raise RoutingError(f"not a phone number: {exc}") from None


@dataclass(frozen=True, slots=True)
class _Country:
    code: str
    national_length: int
    iot_prefixes: tuple[str, ...]
    segments: Mapping[str, str]          # national-number prefix -> carrier id
    lengths: tuple[int, ...]             # prefix lengths present, longest first


class Router:
    """Longest-prefix routing over precomputed per-country segment tables."""

    def __init__(self, profiles: Mapping[str, CarrierProfile], numbering: Mapping[str, Numbering],
                 overrides: Mapping[str, str] | None = None) -> None:
        segments: dict[str, dict[str, str]] = {}
        catch_all: list[str] = []
        for profile in profiles.values():
            if profile.country_code == _CATCH_ALL:
                catch_all.append(profile.id)
                continue
            table = segments.setdefault(profile.country_code, {})
            for prefix in profile.prefixes:
                if not prefix.isdigit():
                    raise ValueError(f"{profile.id}: segment {prefix!r} is not all digits")
                other = table.setdefault(prefix, profile.id)
                if other != profile.id:
                    raise ValueError(f"segment {profile.country_code}/{prefix} claimed by both "
                                     f"{other} and {profile.id}")
        if len(catch_all) > 1:
            raise ValueError(f"only one catch-all (country_code '*') profile allowed: {catch_all}")
        self._catch_all = catch_all[0] if catch_all else None
        countries: dict[str, _Country] = {}
        for cc, table in segments.items():
            plan = numbering.get(cc)
            if plan is None:
                raise ValueError(f"profiles route country code {cc} but no numbering plan is given")
            countries[cc] = _Country(
                cc, plan.national_length, tuple(plan.iot_prefixes), MappingProxyType(dict(table)),
                tuple(sorted({len(p) for p in table}, reverse=True)))
        self._countries = countries
        self._cc_lengths = tuple(sorted({len(cc) for cc in countries}, reverse=True))
        known = set(profiles)
        fixed: dict[str, str] = {}
        for number, carrier in (overrides or {}).items():
            if carrier not in known:
                raise ValueError(f"routing override to unknown carrier {carrier!r}")
            try:
                fixed[normalise(number)] = carrier
            except RoutingError as exc:
                raise ValueError(f"routing override key is not a number: {exc}") from None
        self._overrides: Mapping[str, str] = MappingProxyType(fixed)

    def route(self, number: str) -> Route:
        e164 = normalise(number)
        digits = e164[1:]
        country = self._country_of(digits)
        override = self._overrides.get(e164)
        if override is not None:
            return Route(override, e164, country is not None)
        if country is None:
            if self._catch_all is None:
                raise RoutingError("no carrier for this country code")
            return Route(self._catch_all, e164, False)
        national = digits[len(country.code):]
        if any(national.startswith(p) for p in country.iot_prefixes):
            raise RoutingError(f"+{country.code} IoT/data-only number: cannot receive SMS")
        if len(national) != country.national_length:
            raise RoutingError(f"+{country.code} number has {len(national)} national digits, "
                               f"expected {country.national_length}")
        segments = country.segments
        for length in country.lengths:
            carrier = segments.get(national[:length])
            if carrier is not None:
                return Route(carrier, e164, True)
        raise RoutingError(f"no carrier for number segment +{country.code} {national[:3]}")

    def _country_of(self, digits: str) -> _Country | None:
        for length in self._cc_lengths:
            country = self._countries.get(digits[:length])
            if country is not None:
                return country
        return None
