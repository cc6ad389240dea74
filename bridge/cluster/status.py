"""The cluster as the API shows it: every member's binds, and who is alive and leads.

Refreshed once per heartbeat from the members' rows (each member writes its bind list
with its heartbeat), so ``GET /v1/binds`` on any member answers for the whole cluster
without a query per request; this member's own binds are always shown live.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from twisted.internet.defer import Deferred

from bridge.smpp.types import BindStatus
from bridge.store.interface import ClusterStore
from bridge.store.records import ClusterView, NodeInfo

__all__ = ["ClusterStatus", "binds_json"]

log = structlog.get_logger("cluster")


def binds_json(binds: Sequence[BindStatus]) -> str:
    """A member's bind list as it writes it with its heartbeat."""
    out = []
    for b in binds:
        fields = dataclasses.asdict(b)
        del fields["node"]
        out.append(fields)
    return json.dumps(out)


class ClusterStatus:
    def __init__(self, store: ClusterStore, node: str, *, own_binds: Callable[[], list[BindStatus]],
                 live_after: Callable[[], float]) -> None:
        self._store = store
        self._node = node
        self._own = own_binds
        self._live_after = live_after
        self._view: ClusterView | None = None
        self._others: list[BindStatus] = []

    def seen(self, view: ClusterView) -> Deferred[None]:
        """A heartbeat's view: remember it, and read the other members' reported binds."""
        self._view = view
        return self._store.nodes(self._live_after()).addCallbacks(self._nodes, self._failed)

    def _nodes(self, nodes: list[NodeInfo]) -> None:
        others: list[BindStatus] = []
        for info in nodes:
            if info.name == self._node:
                continue
            try:
                others.extend(BindStatus(**fields, node=info.name) for fields in json.loads(info.binds))
            except (TypeError, ValueError) as exc:   # a member of another version: skip its list
                log.warning("cluster.binds_unreadable", member=info.name, error=str(exc))
        self._others = others

    def _failed(self, failure: Any) -> None:
        log.warning("cluster.status_failed", error=str(failure.value))

    def binds(self) -> list[BindStatus]:
        """Every bind of the cluster, this member's first, each with its member's name."""
        own = [dataclasses.replace(b, node=self._node) for b in self._own()]
        return own + sorted(self._others, key=lambda b: (b.node, b.bind_id))

    def health(self) -> dict[str, Any]:
        view = self._view
        if view is None:
            return {"node": self._node, "cluster": {"leader": None, "live": [], "slots": 0, "held": 0}}
        held = sum(1 for s in view.slots if s.held_by(self._node, view.now))
        return {"node": self._node, "cluster": {"leader": view.leader(), "live": list(view.live),
                                                "slots": len(view.slots), "held": held}}
