"""A member's name and the failover clock every cluster timer derives from.

Why all from ``failover_s``: a dead member's binds must be taken over within it, so the
lease is shorter than it, a member renews several times per lease, and a member stops
using a slot a margin before its lease could lapse (so the cluster never holds more
binds than configured, even while a renewal is late).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from bridge.config import ClusterConfig

__all__ = ["ClusterTiming", "node_name"]


def node_name(config: ClusterConfig, *, worker: int | None = None) -> str:
    """``[cluster] node``, or host name + pid; worker N of ``run --workers`` adds ``-N``."""
    base = config.node or f"{socket.gethostname()}-{os.getpid()}"
    return base if worker is None else f"{base}-{worker}"


@dataclass(frozen=True, slots=True)
class ClusterTiming:
    failover_s: float

    @property
    def heartbeat_s(self) -> float:
        """Two beats may be late before a lease is fenced (at 0.45 of failover_s)."""
        return self.failover_s / 6

    @property
    def lease_s(self) -> float:
        """Lease length: expiry plus one beat to notice it stays within ``failover_s``."""
        return self.failover_s * 0.6

    @property
    def fence_s(self) -> float:
        """How long before its lease ends a member closes a bind it could not renew."""
        return self.failover_s * 0.15
