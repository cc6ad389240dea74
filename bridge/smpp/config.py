"""Configuration of one bind and of a carrier link's retry policy.

Every timer is named with its unit (``*_s``) and lives here, so a reader can see all
of a bind's timing in one place. The password never appears in a ``repr``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from carriers.profiles import CarrierProfile

__all__ = ["BIND_TYPES", "BindConfig", "LinkPolicy"]

BIND_TYPES = ("transmitter", "receiver", "transceiver")


@dataclass(frozen=True, slots=True)
class BindConfig:
    """One SMPP session to keep open to a carrier's SMSC.

    ``tps`` limits submits per second on this bind (``None``: no limit) with a token
    bucket of ``burst`` tokens (default: 50 ms worth, at least 1). ``window`` is the
    number of submit_sm awaiting their response. Reconnects back off exponentially
    from ``reconnect_initial_s`` to ``reconnect_max_s`` with jitter; a refused bind
    for bad credentials backs off from the slower ``credentials_retry_s``. A
    throttling answer lowers the bind's send rate, which then climbs back while the
    SMSC accepts, never above ``tps`` (:mod:`bridge.smpp.adaptive`); throttled even at
    the lowest rate (1/s), the bind pauses for ``throttle_initial_s``, doubling while
    the SMSC keeps throttling, up to ``throttle_max_s``. The reconnect backoff only starts
    over once a bind has stayed up ``stable_after_s``, so an SMSC that accepts binds and
    drops them at once is not hammered.
    """

    carrier: str
    host: str
    port: int
    system_id: str
    password: str = field(repr=False)
    system_type: str = ""
    bind_type: str = "transceiver"
    window: int = 10
    response_timeout_s: float = 30.0
    enquire_link_s: float = 30.0
    tps: float | None = None
    burst: int | None = None
    reconnect_initial_s: float = 1.0
    reconnect_max_s: float = 60.0
    credentials_retry_s: float = 60.0
    throttle_initial_s: float = 0.1
    throttle_max_s: float = 5.0
    connect_timeout_s: float = 10.0
    stable_after_s: float = 30.0
    tls: bool = False
    tls_ca_file: str | None = None   # PEM roots to trust instead of the system's (self-signed SMSCs)
    service_type: str = ""
    address_range: str = ""

    def __post_init__(self) -> None:
        if self.bind_type not in BIND_TYPES:
            raise ValueError(f"bind_type must be one of {', '.join(BIND_TYPES)}, got {self.bind_type!r}")
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be 1..65535, got {self.port}")
        if self.window < 1:
            raise ValueError(f"window must be at least 1, got {self.window}")
        if self.tps is not None and self.tps <= 0:
            raise ValueError(f"tps must be positive or None, got {self.tps}")
        if self.burst is not None and self.burst < 1:
            raise ValueError(f"burst must be at least 1, got {self.burst}")
        for name in ("response_timeout_s", "enquire_link_s", "reconnect_initial_s",
                     "reconnect_max_s", "credentials_retry_s", "throttle_initial_s",
                     "throttle_max_s", "connect_timeout_s", "stable_after_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if len(self.system_id) > 15 or len(self.password) > 8:
            # SMPP 3.4 5.2.1/5.2.2: system_id C-Octet String(16), password (9).
            raise ValueError("system_id must be at most 15 and password at most 8 characters")

    @property
    def submits(self) -> bool:
        """A receiver bind only receives; the other two types submit."""
        return self.bind_type != "receiver"

    @property
    def receives(self) -> bool:
        return self.bind_type != "transmitter"

    @property
    def bucket_size(self) -> int:
        if self.burst is not None:
            return self.burst
        return max(1, round((self.tps or 0) / 20))

    @classmethod
    def for_profile(cls, profile: CarrierProfile, *, host: str = "127.0.0.1",
                    port: int | None = None, **overrides: Any) -> BindConfig:
        """A bind using a carrier profile's SMSC defaults (port, credentials)."""
        values: dict[str, Any] = {
            "carrier": profile.id,
            "host": host,
            "port": port if port is not None else profile.smsc.port,
            "system_id": profile.smsc.system_id,
            "password": profile.smsc.password,
        }
        values.update(overrides)
        return cls(**values)


@dataclass(frozen=True, slots=True)
class LinkPolicy:
    """How hard a carrier link tries before it reports a final failure.

    ``max_transient_retries``: resends after ESME_RSYSERR, generic_nack and other
    transient answers. ``max_timeouts``: response timeouts of the same segment (a
    segment that never gets an answer, e.g. one that makes the SMSC hang); plain
    disconnects are not counted against a segment. ``queue_windows``: how many
    windows' worth of segments the link asks the pipeline to keep queued.
    """

    max_transient_retries: int = 3
    max_timeouts: int = 5
    queue_windows: int = 4
