"""Who should hold which bind slot: a pure function of the cluster view.

Each carrier's slots are spread over the live members: every member gets
``total // n`` and the remainder goes round, starting at a different member for each
carrier (so three one-bind carriers on three members land on three members, not one).
A member takes free slots up to its share; it gives back a surplus only when another
member is short and nothing is free, so the cluster settles instead of flapping.

The slots are shared among the members that beat within a lease period
(``view.sharing``): one that missed that many beats has lost its leases, and the others
take its slots as soon as they end, not a failover period later when it drops out of
the live list (and without handing them to it and back in between).
"""

from __future__ import annotations

from collections import defaultdict

from bridge.store.records import ClusterView, SlotLease

__all__ = ["SlotKey", "fair_share", "plan_claims", "plan_surplus"]

SlotKey = tuple[str, int]


def _by_carrier(view: ClusterView) -> dict[str, list[SlotLease]]:
    out: dict[str, list[SlotLease]] = defaultdict(list)
    for lease in view.slots:
        out[lease.carrier].append(lease)
    return out


def fair_share(live: tuple[str, ...], node: str, total: int, carrier_index: int) -> int:
    """How many of a carrier's ``total`` slots ``node`` should hold (0 if it is not live)."""
    if node not in live:
        return 0
    n = len(live)
    position = (live.index(node) - carrier_index) % n
    return total // n + (1 if position < total % n else 0)


def plan_claims(view: ClusterView, node: str) -> list[SlotKey]:
    """Free slots ``node`` should take now (lowest slot numbers first)."""
    wanted: list[SlotKey] = []
    live = view.sharing
    for index, (_carrier, leases) in enumerate(sorted(_by_carrier(view).items())):
        held = sum(1 for s in leases if s.held_by(node, view.now))
        need = fair_share(live, node, len(leases), index) - held
        if need > 0:
            wanted.extend([(s.carrier, s.slot) for s in leases if s.free(view.now)][:need])
    return wanted


def plan_surplus(view: ClusterView, node: str) -> list[SlotKey]:
    """Slots ``node`` holds beyond its share that a short member is waiting for (highest first)."""
    out: list[SlotKey] = []
    live = view.sharing
    for index, (_carrier, leases) in enumerate(sorted(_by_carrier(view).items())):
        if any(s.free(view.now) for s in leases):
            continue
        total = len(leases)
        holders: dict[str, int] = defaultdict(int)
        for s in leases:
            if s.node is not None:
                holders[s.node] += 1
        short = any(holders[m] < fair_share(live, m, total, index) for m in live if m != node)
        extra = holders[node] - fair_share(live, node, total, index)
        if short and extra > 0:
            mine = sorted((s for s in leases if s.held_by(node, view.now)), key=lambda s: -s.slot)
            out.extend((s.carrier, s.slot) for s in mine[:extra])
    return out
