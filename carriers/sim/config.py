"""Simulator settings: carrier profile defaults plus an optional TOML override file.

Everything the simulator does differently per carrier is here as data (ports,
credentials, limits, outcome rules, blacklist, random mix, delays), so a tester
changes behaviour with a file, never with code. A bad file gives one line,
``file: key: problem``, through :class:`ConfigError`.

Override file layout::

    [sim]                       # defaults for every carrier, plus control API
    control_port = 0
    seed = 7
    rules = [{suffix = "0000", stat = "UNDELIV"}, {suffix = "1111", stat = "none"}]
    [sim.carriers.cmcc]         # one carrier
    port = 0
    tps = 5
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from carriers.profiles import (
    CARRIER_IDS,
    CarrierProfile,
    Numbering,
    ProfileError,
    load_profiles,
)
from carriers.sim.numbers import national_number
from carriers.sim.stat import STAT_PATTERN, default_err

__all__ = [
    "DEFAULT_BLACKLIST",
    "DEFAULT_CONTROL_PORT",
    "DEFAULT_RULES",
    "CarrierSimConfig",
    "ConfigError",
    "DeliveryPolicy",
    "MixEntry",
    "OutcomeRule",
    "SimConfig",
    "config_from_table",
    "load_config",
]

DEFAULT_CONTROL_PORT = 8471


class ConfigError(ValueError):
    """A simulator config that cannot be used; ``str()`` is ``file: key: problem``."""


@dataclass(frozen=True, slots=True)
class OutcomeRule:
    """Recipients ending in ``suffix`` get ``stat`` (``None``: no receipt, ever)."""

    suffix: str
    stat: str | None
    err: str = "000"


@dataclass(frozen=True, slots=True)
class MixEntry:
    """One outcome of the seeded random mix, drawn with relative ``weight``."""

    stat: str
    err: str
    weight: float


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """How deliver_sm (receipts and MO) is retried when the ESME errs or stays silent."""

    response_timeout_s: float = 10.0
    retry_delay_s: float = 5.0
    max_attempts: int = 5
    pending_limit: int = 100_000


@dataclass(frozen=True, slots=True)
class CarrierSimConfig:
    """One simulated SMSC: its profile and the behaviour a tester may override."""

    profile: CarrierProfile
    numbering: Mapping[str, Numbering]
    host: str
    port: int
    system_id: str
    password: str = field(repr=False)
    max_binds: int = 4
    tps: int = 1000
    window: int = 64
    receipt_delay_ms: tuple[int, int] = (20, 200)
    rules: tuple[OutcomeRule, ...] = ()
    blacklist: frozenset[str] = frozenset()
    mix: tuple[MixEntry, ...] = (MixEntry("DELIVRD", "000", 1.0),)
    seed: int = 0
    utc_offset_h: float = 8.0
    message_id_start: int | None = None
    enquire_link_s: float = 30.0
    session_init_s: float = 30.0
    delivery: DeliveryPolicy = DeliveryPolicy()
    # SMPP over TLS: listen with this PEM certificate (and key; may be the same file).
    tls_cert_file: str | None = None
    tls_key_file: str | None = None

    @property
    def id(self) -> str:
        return self.profile.id

    def normalise(self, address: str) -> str:
        """``address`` as this carrier's blacklist and rules see it (national form)."""
        plan = self.numbering.get(self.profile.country_code)
        if plan is None:
            return national_number(address, None)
        return national_number(address, plan.country_code, plan.national_length)


@dataclass(frozen=True, slots=True)
class SimConfig:
    """The whole simulator: five carriers and the control API."""

    carriers: tuple[CarrierSimConfig, ...]
    control_host: str = "127.0.0.1"
    control_port: int = DEFAULT_CONTROL_PORT
    submits_log_size: int = 200_000

    def carrier(self, carrier_id: str) -> CarrierSimConfig:
        for c in self.carriers:
            if c.id == carrier_id:
                return c
        raise KeyError(carrier_id)

    @property
    def carrier_ids(self) -> tuple[str, ...]:
        return tuple(c.id for c in self.carriers)

    def with_ports(self, port: int | None = None, control_port: int | None = None,
                   **per_carrier: int) -> SimConfig:
        """A copy listening elsewhere: ``port`` for every carrier (0 = any free port),
        ``per_carrier`` for single ones (``cmcc=12775``), ``control_port`` for the API."""
        unknown = set(per_carrier) - set(self.carrier_ids)
        if unknown:
            raise KeyError(f"unknown carrier ids: {', '.join(sorted(unknown))}")
        carriers = tuple(
            replace(c, port=per_carrier.get(c.id, c.port if port is None else port))
            for c in self.carriers)
        return replace(self, carriers=carriers,
                       control_port=self.control_port if control_port is None else control_port)


DEFAULT_RULES: tuple[OutcomeRule, ...] = (
    OutcomeRule("0000", "UNDELIV", default_err("UNDELIV")),
    OutcomeRule("1111", None, "000"),
    OutcomeRule("2222", "REJECTD", default_err("REJECTD")),
    OutcomeRule("3333", "MK:0024", default_err("MK:0024")),
)
# Numbers every simulated carrier treats as blacklisted (receipt stat MBBLACK).
DEFAULT_BLACKLIST: tuple[str, ...] = ("13900004444", "13000004444", "13300004444", "19200004444")

# Keys allowed in [sim] (S), in [sim.carriers.<id>] (C), or both.
_SIM_ONLY = {"control_host", "control_port", "submits_log_size", "profiles"}
_CARRIER_ONLY = {"port", "system_id", "password", "message_id_start", "tls_cert_file", "tls_key_file"}
_SHARED = {
    "host", "max_binds", "tps", "window", "receipt_delay_ms", "rules", "blacklist", "mix",
    "seed", "utc_offset_h", "enquire_link_s", "session_init_s", "response_timeout_s",
    "retry_delay_s", "max_attempts", "pending_limit",
}


class _Reader:
    """Typed getters that turn a bad value into ``file: key: problem``."""

    def __init__(self, source: str, prefix: str, data: Mapping[str, Any], allowed: set[str]):
        self.source = source
        self.prefix = prefix
        self.data = data
        for key in data:
            if key not in allowed:
                self.fail(key, "unknown key")

    def fail(self, key: str, problem: str) -> None:
        raise ConfigError(f"{self.source}: {self.prefix}{key}: {problem}")

    def has(self, key: str) -> bool:
        return key in self.data

    def get(self, key: str, check: Callable[[Any], Any], problem: str) -> Any:
        value = self.data[key]
        try:
            result = check(value)
        except (TypeError, ValueError, KeyError):
            result = None
        if result is None:
            self.fail(key, f"{problem}, got {value!r}")
        return result


def _int_in(lo: int, hi: int | None = None) -> Callable[[Any], int | None]:
    def check(v: Any) -> int | None:
        if isinstance(v, bool) or not isinstance(v, int):
            return None
        return v if v >= lo and (hi is None or v <= hi) else None
    return check


def _number(lo: float) -> Callable[[Any], float | None]:
    def check(v: Any) -> float | None:
        if isinstance(v, bool) or not isinstance(v, int | float):
            return None
        return float(v) if v >= lo else None
    return check


def _text(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


def _stat(v: Any) -> str | None:
    return v if isinstance(v, str) and STAT_PATTERN.match(v) else None


def _delay_range(v: Any) -> tuple[int, int] | None:
    if not isinstance(v, list | tuple) or len(v) != 2:
        return None
    lo, hi = (_int_in(0)(x) for x in v)
    if lo is None or hi is None or lo > hi:
        return None
    return (lo, hi)


def _err(v: Any) -> str | None:
    if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 999:
        return f"{v:03d}"
    if isinstance(v, str) and v.isdigit() and len(v) <= 3:
        return v.zfill(3)
    return None


def _rules(v: Any) -> tuple[OutcomeRule, ...] | None:
    if not isinstance(v, list):
        return None
    rules = []
    for item in v:
        if not isinstance(item, dict) or set(item) - {"suffix", "stat", "err"}:
            return None
        suffix = item.get("suffix")
        if not isinstance(suffix, str) or not suffix.isdigit():
            return None
        raw_stat = item.get("stat")
        stat = None if raw_stat == "none" else _stat(raw_stat)
        if stat is None and raw_stat != "none":
            return None
        err = _err(item["err"]) if "err" in item else default_err(stat or "DELIVRD")
        if err is None:
            return None
        rules.append(OutcomeRule(suffix, stat, err))
    return tuple(rules)


def _mix(v: Any) -> tuple[MixEntry, ...] | None:
    if not isinstance(v, dict) or not v:
        return None
    entries = []
    for stat, weight in v.items():
        if _stat(stat) is None or _number(0.0)(weight) is None:
            return None
        entries.append(MixEntry(stat, default_err(stat), float(weight)))
    if sum(e.weight for e in entries) <= 0:
        return None
    return tuple(entries)


def _numbers(v: Any) -> tuple[str, ...] | None:
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        return None
    return tuple(v)


_CHECKS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "host": (_text, "expected a host name or address"),
    "control_host": (_text, "expected a host name or address"),
    "port": (_int_in(0, 65535), "expected a port number 0..65535 (0 = any free port)"),
    "control_port": (_int_in(0, 65535), "expected a port number 0..65535 (0 = any free port)"),
    "submits_log_size": (_int_in(1), "expected a positive integer"),
    "profiles": (_text, "expected a path to a profiles TOML file"),
    "tls_cert_file": (_text, "expected a path to a PEM certificate"),
    "tls_key_file": (_text, "expected a path to a PEM private key"),
    "system_id": (lambda v: v if isinstance(v, str) and 0 < len(v) <= 15 else None,
                  "expected a system_id of 1..15 characters"),
    "password": (lambda v: v if isinstance(v, str) and len(v) <= 8 else None,
                 "expected a password of at most 8 characters"),
    "message_id_start": (_int_in(1, 2**63), "expected a positive integer"),
    "max_binds": (_int_in(1), "expected a positive integer"),
    "tps": (_int_in(1), "expected a positive integer"),
    "window": (_int_in(1), "expected a positive integer"),
    "receipt_delay_ms": (_delay_range, "expected [min_ms, max_ms] with 0 <= min <= max"),
    "rules": (_rules, "expected a list of {suffix = \"digits\", stat = \"STAT\"|\"none\", err = \"nnn\"}"),
    "blacklist": (_numbers, "expected a list of numbers as strings"),
    "mix": (_mix, "expected a table of STAT = weight with a positive total"),
    "seed": (_int_in(0), "expected a non-negative integer"),
    "utc_offset_h": (lambda v: _number(-12.0)(v) if _number(-12.0)(v) is not None and v <= 14 else None,
                     "expected an offset in hours between -12 and 14"),
    "enquire_link_s": (_number(0.0), "expected seconds >= 0 (0 = never)"),
    "session_init_s": (_number(0.0), "expected seconds >= 0 (0 = never)"),
    "response_timeout_s": (_number(0.001), "expected seconds > 0"),
    "retry_delay_s": (_number(0.0), "expected seconds >= 0"),
    "max_attempts": (_int_in(1), "expected a positive integer"),
    "pending_limit": (_int_in(1), "expected a positive integer"),
}


def _read(reader: _Reader, keys: set[str]) -> dict[str, Any]:
    out = {}
    for key in keys:
        if reader.has(key):
            check, problem = _CHECKS[key]
            out[key] = reader.get(key, check, problem)
    return out


def _carrier(profile: CarrierProfile, numbering: Mapping[str, Numbering], index: int,
             shared: dict[str, Any], own: dict[str, Any]) -> CarrierSimConfig:
    values = {**shared, **own}
    smsc = profile.smsc
    defaults = DeliveryPolicy()
    delivery = DeliveryPolicy(
        response_timeout_s=values.get("response_timeout_s", defaults.response_timeout_s),
        retry_delay_s=values.get("retry_delay_s", defaults.retry_delay_s),
        max_attempts=values.get("max_attempts", defaults.max_attempts),
        pending_limit=values.get("pending_limit", defaults.pending_limit),
    )
    base = CarrierSimConfig(
        profile=profile,
        numbering=numbering,
        host=values.get("host", "127.0.0.1"),
        port=values.get("port", smsc.port),
        system_id=values.get("system_id", smsc.system_id),
        password=values.get("password", smsc.password),
        max_binds=values.get("max_binds", smsc.max_binds),
        tps=values.get("tps", smsc.tps),
        window=values.get("window", smsc.window),
        receipt_delay_ms=values.get("receipt_delay_ms", tuple(smsc.receipt_delay_ms)),
        rules=values.get("rules", DEFAULT_RULES),
        mix=values.get("mix", (MixEntry("DELIVRD", "000", 1.0),)),
        # Each carrier gets its own stream so adding traffic on one does not shift another.
        seed=own["seed"] if "seed" in own else shared.get("seed", 0) * 100 + index,
        utc_offset_h=values.get("utc_offset_h", 8.0 if profile.country_code != "*" else 0.0),
        message_id_start=values.get("message_id_start"),
        enquire_link_s=values.get("enquire_link_s", 30.0),
        session_init_s=values.get("session_init_s", 30.0),
        delivery=delivery,
        tls_cert_file=values.get("tls_cert_file"),
        tls_key_file=values.get("tls_key_file", values.get("tls_cert_file")),
    )
    blacklist = values.get("blacklist", DEFAULT_BLACKLIST)
    return _with_blacklist(base, blacklist)


def _with_blacklist(c: CarrierSimConfig, numbers: tuple[str, ...]) -> CarrierSimConfig:
    return replace(c, blacklist=frozenset(c.normalise(n) for n in numbers))


def load_config(path: Path | None = None) -> SimConfig:
    """Build the config from the profiles plus the file at ``path``; raise :class:`ConfigError`."""
    raw: dict[str, Any] = {}
    source = str(path) if path else "<defaults>"
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: TOML syntax: {exc}") from None
    top = _Reader(source, "", raw, {"sim"})
    return config_from_table(top.data.get("sim", {}), source,
                             Path(path).parent if path is not None else None)


def config_from_table(sim_raw: object, source: str, base_dir: Path | None = None) -> SimConfig:
    """Build the config from an already parsed ``[sim]`` table.

    For hosts that keep the simulator's settings inside their own file (the bridge's
    embedded simulator): errors still read ``source: sim.key: problem``, and a
    relative ``profiles`` path is taken from ``base_dir``.
    """
    if not isinstance(sim_raw, dict):
        raise ConfigError(f"{source}: sim: expected a table")
    sim = _Reader(source, "sim.", sim_raw, _SIM_ONLY | _SHARED | {"carriers"})
    sim_values = _read(sim, _SIM_ONLY)
    shared = _read(sim, _SHARED)
    carriers_raw = sim_raw.get("carriers", {})
    if not isinstance(carriers_raw, dict):
        sim.fail("carriers", "expected a table of carrier tables")
    for cid, table in carriers_raw.items():
        if cid not in CARRIER_IDS:
            sim.fail(f"carriers.{cid}", f"unknown carrier id (expected one of {', '.join(CARRIER_IDS)})")
        if not isinstance(table, dict):
            sim.fail(f"carriers.{cid}", "expected a table")

    profiles_path = Path(sim_values["profiles"]) if "profiles" in sim_values else None
    if profiles_path is not None and base_dir is not None and not profiles_path.is_absolute():
        profiles_path = base_dir / profiles_path
    try:
        profiles, numbering = load_profiles(profiles_path)
    except ProfileError as exc:
        raise ConfigError(str(exc)) from None

    carriers = []
    for index, cid in enumerate(CARRIER_IDS):
        if cid not in profiles:
            continue
        own_reader = _Reader(source, f"sim.carriers.{cid}.", carriers_raw.get(cid, {}),
                             _CARRIER_ONLY | _SHARED)
        own = _read(own_reader, _CARRIER_ONLY | _SHARED)
        carriers.append(_carrier(profiles[cid], numbering, index, shared, own))
    _check_ports(source, carriers, sim_values.get("control_port", DEFAULT_CONTROL_PORT))
    return SimConfig(
        carriers=tuple(carriers),
        control_host=sim_values.get("control_host", "127.0.0.1"),
        control_port=sim_values.get("control_port", DEFAULT_CONTROL_PORT),
        submits_log_size=sim_values.get("submits_log_size", 200_000),
    )


def _check_ports(source: str, carriers: list[CarrierSimConfig], control_port: int) -> None:
    seen: dict[int, str] = {}
    if control_port:
        seen[control_port] = "sim.control_port"
    for c in carriers:
        if c.port and c.port in seen:
            raise ConfigError(f"{source}: sim.carriers.{c.id}.port: port {c.port} is also used by {seen[c.port]}")
        if c.port:
            seen[c.port] = f"sim.carriers.{c.id}.port"
