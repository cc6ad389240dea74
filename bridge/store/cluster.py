"""Cluster membership and bind-slot leases, in the shared SQL of both backends.

PostgreSQL is shared by any number of instances: a heartbeat transaction locks the slot
rows (in one order, so two beats never deadlock), renews this member's leases, lets the
caller's pure planner pick free slots, and takes them with a compare-and-set, so a slot
is never held by two members. SQLite is one process (the file lock says so): whoever
held slots before this process started is gone, so joining clears them, and the lone
member holds every slot. The same SQL serves both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from twisted.internet.defer import Deferred

from bridge.store.executor import Dialect, Executor, Tx
from bridge.store.records import ClusterView, Heartbeat, NodeInfo, SlotLease

__all__ = ["SlotPlanner", "SqlCluster"]

#: Given the view inside the heartbeat transaction and the member's name: slots to take.
SlotPlanner = Callable[[ClusterView, str], Sequence[tuple[str, int]]]


def _slots(tx: Tx) -> tuple[SlotLease, ...]:
    return tuple(SlotLease(c, int(s), n, float(u)) for c, s, n, u in tx.rows(
        f"SELECT carrier, slot, node, lease_until FROM bind_slots ORDER BY carrier, slot{tx.for_update}"))


def _live(tx: Tx, live_after: float) -> tuple[str, ...]:
    return tuple(r[0] for r in tx.rows(
        "SELECT name FROM nodes WHERE heartbeat_at > ? ORDER BY name", (live_after,)))


def _upsert(tx: Tx, beat: Heartbeat) -> None:
    tx.run("INSERT INTO nodes (name, started_at, heartbeat_at, api, binds) VALUES (?,?,?,?,?)"
           " ON CONFLICT (name) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, api = excluded.api,"
           " binds = excluded.binds, started_at = excluded.started_at",
           (beat.node, beat.started_at, beat.now, beat.api, beat.binds))


class SqlCluster:
    """Members, their heartbeats and the carriers' bind slots."""

    def __init__(self, ex: Executor) -> None:
        self._ex = ex

    def join(self, beat: Heartbeat, totals: Mapping[str, int]) -> Deferred[None]:
        """Register the member and make sure every carrier has its ``totals`` slots."""
        rows = [(carrier, slot) for carrier, total in totals.items() for slot in range(1, total + 1)]

        def op(tx: Tx) -> None:
            if tx.dialect is Dialect.SQLITE:   # one process per file: earlier holders are gone
                tx.run("DELETE FROM nodes")
                tx.run("UPDATE bind_slots SET node = NULL, lease_until = 0")
            _upsert(tx, beat)
            tx.many("INSERT INTO bind_slots (carrier, slot, node, lease_until) VALUES (?, ?, NULL, 0)"
                    " ON CONFLICT (carrier, slot) DO NOTHING", rows)
        return self._ex.write(op)

    def beat(self, beat: Heartbeat, planner: SlotPlanner) -> Deferred[ClusterView]:
        """Heartbeat, renew held leases, take what ``planner`` picks; the view afterwards."""
        def op(tx: Tx) -> ClusterView:
            slots = _slots(tx)          # locks the slot rows first, always in the same order
            _upsert(tx, beat)
            tx.run("UPDATE bind_slots SET lease_until = ? WHERE node = ? AND lease_until > ?",
                   (beat.lease_until, beat.node, beat.now))
            live = _live(tx, beat.live_after)
            sharing = live if beat.share_after is None else _live(tx, max(beat.share_after, beat.live_after))
            view = ClusterView(beat.now, live, slots, sharing)
            wanted = list(planner(view, beat.node))
            if wanted:
                tx.many("UPDATE bind_slots SET node = ?, lease_until = ? WHERE carrier = ? AND slot = ?"
                        " AND (node IS NULL OR lease_until <= ?)",
                        [(beat.node, beat.lease_until, c, s, beat.now) for c, s in wanted])
            return ClusterView(beat.now, live, _slots(tx), sharing)
        return self._ex.write(op)

    def release(self, node: str, slots: Sequence[tuple[str, int]]) -> Deferred[None]:
        """Give slots back at once (their binds are closed): others need not wait for expiry."""
        rows = [(c, s, node) for c, s in slots]

        def op(tx: Tx) -> None:
            _slots(tx)   # row locks in the heartbeat's order, so a release and a beat cannot deadlock
            tx.many("UPDATE bind_slots SET node = NULL, lease_until = 0"
                    " WHERE carrier = ? AND slot = ? AND node = ?", rows)
        return self._ex.write(op)

    def leave(self, node: str) -> Deferred[None]:
        """A graceful stop: every slot and push claim released, the member gone from the live list."""
        def op(tx: Tx) -> None:
            _slots(tx)   # row locks in the heartbeat's order
            tx.run("UPDATE bind_slots SET node = NULL, lease_until = 0 WHERE node = ?", (node,))
            tx.run("UPDATE outbox SET claimed_by = NULL WHERE claimed_by = ? AND state = 'pending'", (node,))
            tx.run("DELETE FROM nodes WHERE name = ?", (node,))
        return self._ex.write(op)

    def nodes(self, live_after: float) -> Deferred[list[NodeInfo]]:
        """Live members, by name, as they last reported themselves."""
        return self._ex.read(lambda tx: [NodeInfo(*r) for r in tx.rows(
            "SELECT name, started_at, heartbeat_at, api, binds FROM nodes WHERE heartbeat_at > ?"
            " ORDER BY name", (live_after,))])

    def requeue_orphans(self, live_after: float, own: str | None = None) -> Deferred[int]:
        """Dispatched segments nobody alive will answer for: requeued, flagged possible duplicate.

        Those of members whose last heartbeat is at or before ``live_after``, of no member
        (before cluster mode), and, at a member's start, its own from a previous run (``own``).
        """
        return self._ex.write(lambda tx: tx.run(
            "UPDATE segments SET state = 'queued', possible_duplicate = 1, dispatched_by = NULL"
            " WHERE state = 'dispatched' AND (dispatched_by IS NULL OR dispatched_by = ?"
            " OR dispatched_by NOT IN (SELECT name FROM nodes WHERE heartbeat_at > ?))",
            (own, live_after)))

    def slots(self) -> Deferred[list[SlotLease]]:
        return self._ex.read(lambda tx: [SlotLease(c, int(s), n, float(u)) for c, s, n, u in tx.rows(
            "SELECT carrier, slot, node, lease_until FROM bind_slots ORDER BY carrier, slot")])
