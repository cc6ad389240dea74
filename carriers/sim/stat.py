"""Receipt ``stat`` values as data: SMPP message_state, default ``err`` and success.

Carrier codes (``MK:0024``, ``DB:0141``, ``MBBLACK``...) are mapped by family, the
way CARRIERS.md describes; an unknown code is ``UNKNOWN`` (7), never a guess at
success.
"""

from __future__ import annotations

import re

__all__ = [
    "MESSAGE_STATES",
    "STAT_PATTERN",
    "default_err",
    "is_success",
    "message_state",
]

# SMPP 3.4 section 5.2.28 message_state values.
MESSAGE_STATES: dict[str, int] = {
    "ENROUTE": 1,
    "DELIVRD": 2,
    "EXPIRED": 3,
    "DELETED": 4,
    "UNDELIV": 5,
    "ACCEPTD": 6,
    "UNKNOWN": 7,
    "REJECTD": 8,
}

# Whole carrier codes first, then two-letter families (CARRIERS.md "Receipt stat values").
_CARRIER_CODES: dict[str, int] = {"MBBLACK": 8, "BLACK": 8, "DISTURB": 8}
_FAMILIES: dict[str, int] = {
    "MA": 5, "MB": 5, "MK": 5, "MN": 5, "CA": 5, "CB": 5,
    "MC": 3, "MI": 3,
    "DA": 8, "DB": 8, "IA": 8, "IB": 8, "IC": 8, "ID": 8, "HD": 8,
}

# CMPP's Stat is 7 octets; anything longer would be cut by real gateways.
STAT_PATTERN = re.compile(r"^[A-Z0-9:]{1,7}$")
_FAMILY_CODE = re.compile(r"^([A-Z]{2}):(\d{4})$")


def message_state(stat: str) -> int:
    """The message_state TLV value a receipt with ``stat`` carries."""
    if stat in MESSAGE_STATES:
        return MESSAGE_STATES[stat]
    if stat in _CARRIER_CODES:
        return _CARRIER_CODES[stat]
    match = _FAMILY_CODE.match(stat)
    if match:
        return _FAMILIES.get(match.group(1), 7)
    return 7


def is_success(stat: str) -> bool:
    """True for stats that mean the handset got (or will get) the message."""
    return message_state(stat) in (1, 2, 6)


def default_err(stat: str) -> str:
    """Three-digit ``err`` for ``stat`` when a rule does not give one.

    ``XX:nnnn`` codes carry their number (``MK:0024`` -> ``024``); standard stats use
    their message_state so that ``err`` is never ``000`` for a failure.
    """
    match = _FAMILY_CODE.match(stat)
    if match:
        return match.group(2)[-3:]
    state = message_state(stat)
    return "000" if state in (1, 2, 6) else f"{state:03d}"
