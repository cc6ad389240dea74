"""Daemon configuration: TOML parsed with ``tomllib``, validated into frozen dataclasses.

Every problem becomes one :class:`ConfigError` line ``file: key: what is wrong`` so an
operator can fix a config without reading a traceback.
"""

from __future__ import annotations

import base64
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.numbers import InvalidNumberError, normalise_number
from bridge.urlpolicy import parse_host_port
from carriers.profiles import CARRIER_IDS, CarrierProfile, ProfileError, load_profiles

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "ApiConfig",
    "AppConfig",
    "BindSpec",
    "BridgeConfig",
    "ClusterConfig",
    "CallbackConfig",
    "CarrierConfig",
    "ChannelConfig",
    "ClusterConfig",
    "ConfigError",
    "LogConfig",
    "RulesConfig",
    "SimulatorConfig",
    "StoreConfig",
    "TemplateConfig",
    "load_config",
]

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "config" / "default.toml"
BIND_TYPES = ("transmitter", "receiver", "transceiver")
MESSAGE_CLASSES = ("otp", "notification", "marketing")
DEFAULT_UNSUBSCRIBE_KEYWORDS = ("T", "R", "TD", "N", "0000", "退订", "退訂")


class ConfigError(ValueError):
    """One line naming the file, the key and the problem."""


@dataclass(frozen=True, slots=True)
class ApiConfig:
    host: str = "127.0.0.1"
    port: int = 8470
    max_body_bytes: int = 1_048_576
    operator_token: str = field(default="", repr=False)
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    idle_timeout_s: float = 60.0
    max_connections: int = 512


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """``url`` (a PostgreSQL URL, inline or from ``url_env``) wins over ``path`` when given."""

    path: Path = Path("var/bridge.db")
    commit_interval_ms: int = 2     # against 5: about 3 ms off p50 and p99 at 500 msg/s on SQLite
    url: str | None = field(default=None, repr=False)   # postgresql://...: PostgreSQL instead of SQLite
    retention_days: int = 90        # FAQ 12.15: send records are kept at least 90 days

    @property
    def backend(self) -> str:
        return "postgresql" if self.url else "sqlite"


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    node: str | None = None         # this instance's name; default host name + pid
    failover_s: float = 10.0


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = "info"
    format: str | None = None
    redact: bool = True


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    embedded: bool = False
    control_port: int = 8471
    use_profile_ports: bool = True
    config_path: Path | None = None


@dataclass(frozen=True, slots=True)
class RulesConfig:
    receipt_timeout_s: float = 259_200.0
    quiet_start_min: int = 22 * 60
    quiet_end_min: int = 8 * 60
    utc_offset_hours: float = 8.0
    exempt_numbers: frozenset[str] = frozenset()
    limit_international: bool = False
    unsubscribe_keywords: tuple[str, ...] = DEFAULT_UNSUBSCRIBE_KEYWORDS
    mo_reassembly_ttl_s: float = 600.0


@dataclass(frozen=True, slots=True)
class CallbackConfig:
    timeout_s: float = 10.0
    max_age_s: float = 86_400.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 300.0
    allowed_hosts: frozenset[str] = frozenset()
    concurrency: int = 128
    # Canonical "host:port" entries exempt from the private-address refusal (SSRF guard).
    allow_private: frozenset[str] = frozenset()
    # Pushes in flight to one receiver (host:port), so one slow receiver cannot take every slot.
    receiver_concurrency: int = 64


@dataclass(frozen=True, slots=True)
class BindSpec:
    type: str
    count: int = 1


@dataclass(frozen=True, slots=True)
class CarrierConfig:
    id: str
    enabled: bool
    host: str
    port: int
    system_id: str
    password: str = field(repr=False)
    system_type: str
    binds: tuple[BindSpec, ...]
    window: int
    tps: float | None
    response_timeout_s: float
    enquire_link_s: float
    tls: bool
    tls_ca_file: str | None
    profile: CarrierProfile


@dataclass(frozen=True, slots=True)
class AppConfig:
    id: str
    token: str = field(repr=False)
    uplink_url: str = ""
    webhook_secret: str = field(default="", repr=False)   # "whsec_<base64>": signs pushes


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    number: str
    signature: str
    app: str


@dataclass(frozen=True, slots=True)
class TemplateConfig:
    id: str
    text: str
    klass: str


@dataclass(frozen=True, slots=True)
class BridgeConfig:
    path: Path
    api: ApiConfig
    store: StoreConfig
    cluster: ClusterConfig
    logging: LogConfig
    simulator: SimulatorConfig
    rules: RulesConfig
    callbacks: CallbackConfig
    carriers: dict[str, CarrierConfig]
    apps: dict[str, AppConfig]
    channels: dict[str, ChannelConfig]
    templates: dict[str, TemplateConfig]
    routing_overrides: dict[str, str]


class _Table(dict[str, Any]):
    """A config table that remembers which keys the loader looked at.

    Whatever was never read is unknown: :meth:`_Reader.check_unknown` reports it, so
    a key the loader learns to read is accepted without a second list to maintain.
    """

    def __init__(self, data: dict[str, Any], key: str) -> None:
        super().__init__(data)
        self.key = key
        self.read: set[str] = set()

    def get(self, name: str, default: Any = None) -> Any:  # noqa: D102
        self.read.add(name)
        return super().get(name, default)

    def __getitem__(self, name: str) -> Any:
        self.read.add(name)
        return super().__getitem__(name)

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str):
            self.read.add(name)
        return super().__contains__(name)


class _Reader:
    """Typed accessors that turn a bad value into a one-line ConfigError."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tables: list[_Table] = []

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}: {key}: {problem}")

    def track(self, value: dict[str, Any], key: str) -> _Table:
        """Watch ``value``'s keys: any key not read by the end is an error."""
        table = _Table(value, key)
        self._tables.append(table)
        return table

    def table(self, data: dict[str, Any], key: str, name: str, *, free: bool = False) -> dict[str, Any]:
        """The table ``name``; ``free`` tables (keyed by ids or numbers) are not key-checked."""
        value = data.get(name, {})
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a table, got {value!r}")
        return value if free else self.track(value, key)

    def check_unknown(self) -> None:
        for table in self._tables:
            for name in table:
                if name not in table.read:
                    known = ", ".join(sorted(table.read)) or "none"
                    raise self.fail(f"{table.key}.{name}", f"unknown key (known here: {known})")

    def int(self, data: dict[str, Any], key: str, name: str, default: int, lo: int, hi: int) -> int:
        value = data.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise self.fail(key, f"expected an integer {lo}-{hi}, got {_show(value)}")
        return value

    def num(self, data: dict[str, Any], key: str, name: str, default: float | None, lo: float) -> float | None:
        value = data.get(name, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or value < lo:
            raise self.fail(key, f"expected a number >= {lo:g}, got {_show(value)}")
        return float(value)

    def str(self, data: dict[str, Any], key: str, name: str, default: str | None = None) -> str:
        value = data.get(name, default)
        if value is None:
            raise self.fail(key, "missing")
        if not isinstance(value, str):
            raise self.fail(key, f"expected a string, got {_show(value)}")
        return value

    def bool(self, data: dict[str, Any], key: str, name: str, default: bool) -> bool:
        value = data.get(name, default)
        if not isinstance(value, bool):
            raise self.fail(key, f"expected true or false, got {_show(value)}")
        return value

    def choice(self, data: dict[str, Any], key: str, name: str, default: str | None, allowed: tuple[str, ...]) -> str:
        value = data.get(name, default)
        if value not in allowed:
            raise self.fail(key, f"expected one of {', '.join(allowed)}, got {_show(value)}")
        return value

    def strings(self, data: dict[str, Any], key: str, name: str) -> tuple[str, ...]:
        value = data.get(name, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(key, f"expected a list of strings, got {_show(value)}")
        return tuple(value)

    def hhmm(self, key: str, value: object) -> int:
        if isinstance(value, str) and len(value) == 5 and value[2] == ":":
            hh, mm = value[:2], value[3:]
            if hh.isdigit() and mm.isdigit() and int(hh) < 24 and int(mm) < 60:
                return int(hh) * 60 + int(mm)
        raise self.fail(key, f"expected a time HH:MM, got {_show(value)}")


def _show(value: object) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def load_config(path: Path | str | None = None, *, profiles_path: Path | None = None) -> BridgeConfig:
    """Read and validate a config file; raise :class:`ConfigError` on the first problem."""
    path = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    shown = _display_path(path)
    rd = _Reader(shown)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{shown}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{shown}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{shown}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{shown}: invalid TOML: {exc}") from None
    try:
        profiles, _numbering = load_profiles(profiles_path)
    except ProfileError as exc:
        raise ConfigError(str(exc)) from None

    known = {"api", "cluster", "store", "logging", "simulator", "rules", "callbacks", "carriers", "apps",
             "channels", "templates", "routing"}
    for key in raw:
        if key not in known:
            raise rd.fail(key, f"unknown section (expected one of {', '.join(sorted(known))})")

    a = rd.table(raw, "api", "api")
    api = ApiConfig(
        host=rd.str(a, "api.host", "host", "127.0.0.1"),
        port=rd.int(a, "api.port", "port", 8470, 0, 65535),
        max_body_bytes=rd.int(a, "api.max_body_bytes", "max_body_bytes", 1_048_576, 1024, 64 * 1024 * 1024),
        operator_token=_secret(rd, a, "api.operator_token", "operator_token"),
        header_timeout_s=rd.num(a, "api.header_timeout_s", "header_timeout_s", 10.0, 0.001),
        body_timeout_s=rd.num(a, "api.body_timeout_s", "body_timeout_s", 30.0, 0.001),
        idle_timeout_s=rd.num(a, "api.idle_timeout_s", "idle_timeout_s", 60.0, 0.001),
        max_connections=rd.int(a, "api.max_connections", "max_connections", 512, 1, 1_000_000),
    )
    s = rd.table(raw, "store", "store")
    url = _secret(rd, s, "store.url", "url") or None
    if url is not None and not url.startswith(("postgresql://", "postgres://")):
        raise rd.fail("store.url", "expected a postgresql:// URL")
    store = StoreConfig(
        path=Path(rd.str(s, "store.path", "path", "var/bridge.db")),
        commit_interval_ms=rd.int(s, "store.commit_interval_ms", "commit_interval_ms", 2, 0, 1000),
        url=url,
        retention_days=rd.int(s, "store.retention_days", "retention_days", 90, 1, 100_000),
    )
    cl = rd.table(raw, "cluster", "cluster")
    cluster = ClusterConfig(
        node=rd.str(cl, "cluster.node", "node") if cl.get("node") is not None else None,
        failover_s=rd.num(cl, "cluster.failover_s", "failover_s", 10.0, 0.5),
    )
    lg = rd.table(raw, "logging", "logging")
    logging_cfg = LogConfig(
        level=rd.choice(lg, "logging.level", "level", "info", ("debug", "info", "warning", "error")),
        format=lg.get("format") and rd.choice(lg, "logging.format", "format", None, ("json", "console")),
        redact=rd.bool(lg, "logging.redact", "redact", True),
    )
    sm = rd.table(raw, "simulator", "simulator")
    sim_path = sm.get("config")
    simulator = SimulatorConfig(
        embedded=rd.bool(sm, "simulator.embedded", "embedded", False),
        control_port=rd.int(sm, "simulator.control_port", "control_port", 8471, 0, 65535),
        use_profile_ports=rd.bool(sm, "simulator.use_profile_ports", "use_profile_ports", True),
        config_path=Path(rd.str(sm, "simulator.config", "config")) if sim_path is not None else None,
    )
    r = rd.table(raw, "rules", "rules")
    quiet = r.get("quiet_hours", ["22:00", "08:00"])
    if not isinstance(quiet, list) or len(quiet) != 2:
        raise rd.fail("rules.quiet_hours", f'expected ["HH:MM", "HH:MM"], got {_show(quiet)}')
    rules = RulesConfig(
        receipt_timeout_s=rd.num(r, "rules.receipt_timeout_s", "receipt_timeout_s", 259_200.0, 0.001),
        quiet_start_min=rd.hhmm("rules.quiet_hours[0]", quiet[0]),
        quiet_end_min=rd.hhmm("rules.quiet_hours[1]", quiet[1]),
        utc_offset_hours=rd.num(r, "rules.utc_offset_hours", "utc_offset_hours", 8.0, -12.0),
        exempt_numbers=_numbers(rd, rd.strings(r, "rules.exempt_numbers", "exempt_numbers"),
                                "rules.exempt_numbers"),
        limit_international=rd.bool(r, "rules.limit_international", "limit_international", False),
        unsubscribe_keywords=rd.strings(r, "rules.unsubscribe_keywords", "unsubscribe_keywords")
        or DEFAULT_UNSUBSCRIBE_KEYWORDS,
        mo_reassembly_ttl_s=rd.num(r, "rules.mo_reassembly_ttl_s", "mo_reassembly_ttl_s", 600.0, 0.001),
    )
    cb = rd.table(raw, "callbacks", "callbacks")
    callbacks = CallbackConfig(
        timeout_s=rd.num(cb, "callbacks.timeout_s", "timeout_s", 10.0, 0.001),
        max_age_s=rd.num(cb, "callbacks.max_age_s", "max_age_s", 86_400.0, 0.001),
        backoff_initial_s=rd.num(cb, "callbacks.backoff_initial_s", "backoff_initial_s", 1.0, 0.001),
        backoff_max_s=rd.num(cb, "callbacks.backoff_max_s", "backoff_max_s", 300.0, 0.001),
        allowed_hosts=frozenset(rd.strings(cb, "callbacks.allowed_hosts", "allowed_hosts")),
        concurrency=rd.int(cb, "callbacks.concurrency", "concurrency", 128, 1, 10_000),
        allow_private=_allow_private(rd, cb),
        receiver_concurrency=rd.int(cb, "callbacks.receiver_concurrency", "receiver_concurrency",
                                    64, 1, 10_000),
    )
    carriers = _carriers(rd, rd.table(raw, "carriers", "carriers", free=True), profiles, simulator)
    apps = _apps(rd, raw.get("apps", []))
    channels = _channels(rd, raw.get("channels", []), apps)
    templates = _templates(rd, raw.get("templates", []))
    ro = rd.table(raw, "routing", "routing")
    overrides = rd.table(ro, "routing.overrides", "overrides", free=True)
    for number, carrier in overrides.items():
        if carrier not in carriers:
            raise rd.fail(f"routing.overrides.{number}", f"unknown carrier {_show(carrier)}")
    rd.check_unknown()
    return BridgeConfig(
        path=path, api=api, store=store, cluster=cluster, logging=logging_cfg, simulator=simulator, rules=rules,
        callbacks=callbacks, carriers=carriers, apps=apps, channels=channels, templates=templates,
        routing_overrides=dict(overrides),
    )


def _display_path(path: Path) -> Path:
    try:
        return path.resolve().relative_to(Path.cwd())
    except ValueError:
        return path


def _secret(rd: _Reader, data: dict[str, Any], key: str, name: str) -> str:
    """A secret is either inline or read from the environment variable ``<name>_env`` names."""
    env_name = data.get(f"{name}_env")
    inline = data.get(name)
    if env_name is not None:
        if not isinstance(env_name, str) or not env_name:
            raise rd.fail(f"{key}_env", f"expected an environment variable name, got {_show(env_name)}")
        value = os.environ.get(env_name)
        if value is None:
            raise rd.fail(f"{key}_env", f"environment variable {env_name} is not set")
        return value
    value = "" if inline is None else inline
    if not isinstance(value, str):
        raise rd.fail(key, "expected a string")
    return value


def _carriers(rd: _Reader, data: dict[str, Any], profiles: dict[str, CarrierProfile],
              simulator: SimulatorConfig) -> dict[str, CarrierConfig]:
    out: dict[str, CarrierConfig] = {}
    for cid, c in data.items():
        key = f"carriers.{cid}"
        if cid not in CARRIER_IDS or cid not in profiles:
            raise rd.fail(key, f"unknown carrier id (expected one of {', '.join(CARRIER_IDS)})")
        if not isinstance(c, dict):
            raise rd.fail(key, "expected a table")
        c = rd.track(c, key)
        prof = profiles[cid]
        binds_raw = c.get("binds", [{"type": "transceiver", "count": 1}])
        if not isinstance(binds_raw, list) or not binds_raw:
            raise rd.fail(f"{key}.binds", "expected a non-empty list of {type, count} tables")
        binds = []
        for i, b in enumerate(binds_raw):
            bkey = f"{key}.binds[{i}]"
            if not isinstance(b, dict):
                raise rd.fail(bkey, "expected a table {type, count}")
            b = rd.track(b, bkey)
            binds.append(BindSpec(
                type=rd.choice(b, f"{bkey}.type", "type", None, BIND_TYPES),
                count=rd.int(b, f"{bkey}.count", "count", 1, 1, 64),
            ))
        password = _secret(rd, c, f"{key}.password", "password") or prof.smsc.password
        out[cid] = CarrierConfig(
            id=cid,
            enabled=rd.bool(c, f"{key}.enabled", "enabled", True),
            host=rd.str(c, f"{key}.host", "host", "127.0.0.1"),
            port=rd.int(c, f"{key}.port", "port", prof.smsc.port, 0, 65535),
            system_id=rd.str(c, f"{key}.system_id", "system_id", prof.smsc.system_id),
            password=password,
            system_type=rd.str(c, f"{key}.system_type", "system_type", ""),
            binds=tuple(binds),
            window=rd.int(c, f"{key}.window", "window", 10, 1, 1000),
            tps=rd.num(c, f"{key}.tps", "tps", None, 0.001),
            response_timeout_s=rd.num(c, f"{key}.response_timeout_s", "response_timeout_s", 30.0, 0.001),
            enquire_link_s=rd.num(c, f"{key}.enquire_link_s", "enquire_link_s", 30.0, 0.001),
            tls=rd.bool(c, f"{key}.tls", "tls", False),
            tls_ca_file=c.get("tls_ca_file") and rd.str(c, f"{key}.tls_ca_file", "tls_ca_file"),
            profile=prof,
        )
    return out


def _allow_private(rd: _Reader, cb: dict[str, Any]) -> frozenset[str]:
    out = set()
    for i, entry in enumerate(rd.strings(cb, "callbacks.allow_private", "allow_private")):
        try:
            out.add(parse_host_port(entry))
        except ValueError as exc:
            raise rd.fail(f"callbacks.allow_private[{i}]", str(exc)) from None
    return frozenset(out)


def _valid_webhook_secret(secret: str) -> bool:
    if not secret.startswith("whsec_"):
        return False
    try:
        return len(base64.b64decode(secret[6:], validate=True)) >= 16
    except ValueError:
        return False


def _list_of_tables(rd: _Reader, value: object, key: str) -> list[_Table]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise rd.fail(key, f"expected an array of tables ([[{key}]]), got {_show(value)}")
    return [rd.track(v, f"{key}[{i}]") for i, v in enumerate(value)]


def _numbers(rd: _Reader, values: tuple[str, ...], key: str) -> frozenset[str]:
    """Phone numbers in config get the same E.164 normalisation as numbers in requests."""
    out = set()
    for i, value in enumerate(values):
        try:
            out.add(normalise_number(value))
        except InvalidNumberError as exc:
            raise rd.fail(f"{key}[{i}]", f"not a phone number: {exc}") from None
    return frozenset(out)


def _apps(rd: _Reader, value: object) -> dict[str, AppConfig]:
    out: dict[str, AppConfig] = {}
    for i, a in enumerate(_list_of_tables(rd, value, "apps")):
        key = f"apps[{i}]"
        app = AppConfig(
            id=rd.str(a, f"{key}.id", "id"),
            token=_secret(rd, a, f"{key}.token", "token"),
            uplink_url=rd.str(a, f"{key}.uplink_url", "uplink_url", ""),
            webhook_secret=_secret(rd, a, f"{key}.webhook_secret", "webhook_secret"),
        )
        if app.webhook_secret and not _valid_webhook_secret(app.webhook_secret):
            raise rd.fail(f"{key}.webhook_secret", "expected \"whsec_\" followed by base64 of at least 16 bytes")
        if not app.token:
            raise rd.fail(f"{key}.token", "missing (every application needs a token)")
        if app.uplink_url and not app.uplink_url.startswith(("http://", "https://")):
            raise rd.fail(f"{key}.uplink_url", f"expected an http:// or https:// URL, got {_show(app.uplink_url)}")
        if app.id in out:
            raise rd.fail(f"{key}.id", f"duplicate application id {_show(app.id)}")
        out[app.id] = app
    return out


def _channels(rd: _Reader, value: object, apps: dict[str, AppConfig]) -> dict[str, ChannelConfig]:
    out: dict[str, ChannelConfig] = {}
    for i, c in enumerate(_list_of_tables(rd, value, "channels")):
        key = f"channels[{i}]"
        number = rd.str(c, f"{key}.number", "number")
        if not number.isdigit() or not 1 <= len(number) <= 20:
            raise rd.fail(f"{key}.number", f"expected 1-20 digits, got {_show(number)}")
        ch = ChannelConfig(number=number, signature=rd.str(c, f"{key}.signature", "signature"),
                           app=rd.str(c, f"{key}.app", "app"))
        if ch.app not in apps:
            raise rd.fail(f"{key}.app", f"unknown application {_show(ch.app)}")
        if number in out:
            raise rd.fail(f"{key}.number", f"duplicate channel number {_show(number)}")
        out[number] = ch
    return out


def _templates(rd: _Reader, value: object) -> dict[str, TemplateConfig]:
    out: dict[str, TemplateConfig] = {}
    for i, t in enumerate(_list_of_tables(rd, value, "templates")):
        key = f"templates[{i}]"
        tpl = TemplateConfig(
            id=rd.str(t, f"{key}.id", "id"),
            text=rd.str(t, f"{key}.text", "text"),
            klass=rd.choice(t, f"{key}.class", "class", "notification", MESSAGE_CLASSES),
        )
        if tpl.id in out:
            raise rd.fail(f"{key}.id", f"duplicate template id {_show(tpl.id)}")
        out[tpl.id] = tpl
    return out
