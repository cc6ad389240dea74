"""Carrier profiles loaded from ``profiles.toml``: segments, id and receipt dialects.

The bridge routes with these profiles and the simulator impersonates them, so both
sides agree by construction. Message-id dialects live here because the simulator
writes them and the bridge must read them back.
"""

from __future__ import annotations

import tomllib
import uuid
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "CARRIER_IDS",
    "DEFAULT_PROFILES_PATH",
    "CarrierProfile",
    "Numbering",
    "ProfileError",
    "SmscDefaults",
    "canonical_message_id",
    "format_message_id",
    "load_profiles",
]

DEFAULT_PROFILES_PATH = Path(__file__).with_name("profiles.toml")
CARRIER_IDS = ("cmcc", "cucc", "ctcc", "cbn", "intl")
MESSAGE_ID_DIALECTS = ("decimal", "hex_upper", "hex_lower_padded", "uuid")
RECEIPT_DIALECTS = ("text", "tlv", "text+tlv", "payload")
CONCAT_MODES = ("udh8", "udh16", "sar")
DATA_CODING_0 = ("gsm7", "latin1", "ascii")


class ProfileError(ValueError):
    """A carrier profile file that cannot be used; the message names file and key."""


@dataclass(frozen=True, slots=True)
class SmscDefaults:
    port: int
    system_id: str
    password: str = field(repr=False)
    max_binds: int = 4
    tps: int = 1000
    window: int = 64
    receipt_delay_ms: tuple[int, int] = (20, 200)


@dataclass(frozen=True, slots=True)
class Numbering:
    country_code: str
    national_length: int
    iot_prefixes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CarrierProfile:
    id: str
    name: str
    country_code: str
    prefixes: tuple[str, ...]
    message_id_dialect: str
    receipt_id_dialect: str
    receipt_dialect: str
    concat: str
    data_coding_0: str
    failure_codes: tuple[str, ...]
    smsc: SmscDefaults
    mo: bool = True


def _choice(path: Path, key: str, value: object, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ProfileError(f"{path}: {key}: expected one of {', '.join(allowed)}, got {value!r}")
    return str(value)


def load_profiles(path: Path | None = None) -> tuple[dict[str, CarrierProfile], dict[str, Numbering]]:
    """Load and check every profile; raise :class:`ProfileError` naming the bad key."""
    path = path or DEFAULT_PROFILES_PATH
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ProfileError(f"{path}: {exc}") from None
    numbering = {
        cc: Numbering(cc, int(v.get("national_length", 0)), tuple(v.get("iot_prefixes", ())))
        for cc, v in raw.pop("numbering", {}).items()
    }
    profiles: dict[str, CarrierProfile] = {}
    for cid, data in raw.items():
        if cid not in CARRIER_IDS:
            raise ProfileError(f"{path}: {cid}: unknown carrier id (expected one of {', '.join(CARRIER_IDS)})")
        try:
            smsc = data["smsc"]
            profiles[cid] = CarrierProfile(
                id=cid,
                name=str(data["name"]),
                country_code=str(data["country_code"]),
                prefixes=tuple(str(p) for p in data.get("prefixes", ())),
                message_id_dialect=_choice(path, f"{cid}.message_id_dialect", data["message_id_dialect"], MESSAGE_ID_DIALECTS),
                receipt_id_dialect=_choice(path, f"{cid}.receipt_id_dialect", data.get("receipt_id_dialect", data["message_id_dialect"]), MESSAGE_ID_DIALECTS),
                receipt_dialect=_choice(path, f"{cid}.receipt_dialect", data["receipt_dialect"], RECEIPT_DIALECTS),
                concat=_choice(path, f"{cid}.concat", data.get("concat", "udh8"), CONCAT_MODES),
                data_coding_0=_choice(path, f"{cid}.data_coding_0", data.get("data_coding_0", "gsm7"), DATA_CODING_0),
                failure_codes=tuple(data.get("failure_codes", ())),
                mo=bool(data.get("mo", True)),
                smsc=SmscDefaults(
                    port=int(smsc["port"]),
                    system_id=str(smsc["system_id"]),
                    password=str(smsc["password"]),
                    max_binds=int(smsc.get("max_binds", 4)),
                    tps=int(smsc.get("tps", 1000)),
                    window=int(smsc.get("window", 64)),
                    receipt_delay_ms=tuple(smsc.get("receipt_delay_ms", (20, 200))),
                ),
            )
        except KeyError as exc:
            raise ProfileError(f"{path}: {cid}.{exc.args[0]}: missing") from None
    return profiles, numbering


def format_message_id(dialect: str, number: int) -> str:
    """Write message id ``number`` the way a carrier of ``dialect`` does."""
    if dialect == "decimal":
        return str(number)
    if dialect == "hex_upper":
        return f"{number:X}"
    if dialect == "hex_lower_padded":
        return f"{number:016x}"
    if dialect == "uuid":
        return str(uuid.UUID(int=number))
    raise ValueError(f"unknown message id dialect {dialect!r}")


def canonical_message_id(dialect: str, raw: str) -> str:
    """One canonical form per id, whatever base, case or padding the carrier used."""
    text = raw.strip()
    try:
        if dialect == "decimal":
            return str(int(text, 10))
        if dialect in ("hex_upper", "hex_lower_padded"):
            return str(int(text, 16))
        if dialect == "uuid":
            return str(uuid.UUID(text).int)
    except ValueError:
        pass
    return text.lower()
