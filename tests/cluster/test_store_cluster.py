"""Membership and bind-slot leases in the store, on both backends.

PostgreSQL is shared: two stores opened on one URL are two members. SQLite is one
process, so a member joining finds the cluster empty whatever the file says.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bridge.cluster.slots import plan_claims
from bridge.store import Store, open_store, result_of
from bridge.store.records import ClusterView, Heartbeat
from tests.conftest import Backend

T0 = 1_800_000_000.0
TOTALS = {"cmcc": 3, "cucc": 1}


def beat(node: str, now: float, lease_s: float = 6.0) -> Heartbeat:
    return Heartbeat(node=node, now=now, started_at=T0, lease_until=now + lease_s, live_after=now - 10,
                     api=f"127.0.0.1:{len(node)}", binds="[]")


def held(view: ClusterView, node: str) -> list[tuple[str, int]]:
    return [(s.carrier, s.slot) for s in view.slots if s.held_by(node, view.now)]


@pytest.fixture(name="store")
def _store(store_backend: Backend) -> Iterator[Store]:
    store = open_store(store_backend.config, inline=True)
    yield store
    result_of(store.close())


class TestOneMember:
    def test_join_creates_the_slots_and_a_lone_member_takes_them_all(self, store: Store) -> None:
        """A carrier's configured binds become slots; the only member holds all of them."""
        result_of(store.cluster.join(beat("a", T0), TOTALS))
        view = result_of(store.cluster.beat(beat("a", T0), plan_claims))
        assert view.live == ("a",) and view.leader() == "a"
        assert held(view, "a") == [("cmcc", 1), ("cmcc", 2), ("cmcc", 3), ("cucc", 1)]
        assert all(s.lease_until == T0 + 6 for s in view.slots)

    def test_a_beat_renews_held_leases(self, store: Store) -> None:
        """Each heartbeat moves the member's leases forward."""
        result_of(store.cluster.join(beat("a", T0), TOTALS))
        result_of(store.cluster.beat(beat("a", T0), plan_claims))
        view = result_of(store.cluster.beat(beat("a", T0 + 2), lambda v, n: ()))
        assert {s.lease_until for s in view.slots} == {T0 + 8}

    def test_release_and_leave_free_the_slots_at_once(self, store: Store) -> None:
        """Released slots are free without waiting; leaving frees the rest and drops the member."""
        result_of(store.cluster.join(beat("a", T0), TOTALS))
        result_of(store.cluster.beat(beat("a", T0), plan_claims))
        result_of(store.cluster.release("a", [("cmcc", 3)]))
        assert [s.node for s in result_of(store.cluster.slots())] == ["a", "a", None, "a"]
        result_of(store.cluster.leave("a"))
        assert {s.node for s in result_of(store.cluster.slots())} == {None}
        assert result_of(store.cluster.nodes(T0 - 10)) == []

    def test_nodes_lists_the_live_members_as_reported(self, store: Store) -> None:
        """A member's row carries its API address and its bind list."""
        result_of(store.cluster.join(beat("a", T0), TOTALS))
        [node] = result_of(store.cluster.nodes(T0 - 10))
        assert (node.name, node.api, node.binds, node.heartbeat_at) == ("a", "127.0.0.1:1", "[]", T0)
        assert result_of(store.cluster.nodes(T0 + 1)) == []


class TestSqliteIsOneProcess:
    def test_joining_forgets_an_earlier_process(self, tmp_path) -> None:  # noqa: ANN001
        """On SQLite whoever held slots before this process started is gone (the file lock)."""
        from bridge.config import StoreConfig

        config = StoreConfig(path=tmp_path / "b.db")
        first = open_store(config, inline=True)
        result_of(first.cluster.join(beat("old", T0), TOTALS))
        result_of(first.cluster.beat(beat("old", T0), plan_claims))
        result_of(first.close())          # a crash would leave the same rows
        second = open_store(config, inline=True)
        result_of(second.cluster.join(beat("new", T0 + 1), TOTALS))
        view = result_of(second.cluster.beat(beat("new", T0 + 1), plan_claims))
        assert view.live == ("new",) and len(held(view, "new")) == 4
        result_of(second.close())


class TestSharedPostgres:
    @pytest.fixture(name="pair")
    def _pair(self, pg_server) -> Iterator[tuple[Store, Store]]:  # noqa: ANN001
        from bridge.config import StoreConfig

        config = StoreConfig(url=pg_server.new_database())
        a, b = open_store(config, inline=True), open_store(config, inline=True)
        yield a, b
        result_of(a.close())
        result_of(b.close())

    def test_two_members_share_the_slots(self, pair: tuple[Store, Store]) -> None:
        """The second member takes what the first left free; no slot has two holders."""
        a, b = pair
        result_of(a.cluster.join(beat("a", T0), TOTALS))
        result_of(b.cluster.join(beat("b", T0), TOTALS))
        result_of(a.cluster.beat(beat("a", T0), plan_claims))
        view = result_of(b.cluster.beat(beat("b", T0), plan_claims))
        assert view.live == ("a", "b")
        assert held(view, "a") == [("cmcc", 1), ("cmcc", 2)]
        assert held(view, "b") == [("cmcc", 3), ("cucc", 1)]   # the remainder rotates per carrier

    def test_compare_and_set_refuses_a_live_lease(self, pair: tuple[Store, Store]) -> None:
        """A planner that asks for a held slot gets nothing: the claim is compare-and-set."""
        a, b = pair
        result_of(a.cluster.join(beat("a", T0), TOTALS))
        result_of(a.cluster.beat(beat("a", T0), plan_claims))
        result_of(b.cluster.join(beat("b", T0), TOTALS))
        view = result_of(b.cluster.beat(beat("b", T0 + 1), lambda v, n: [("cmcc", 1), ("cucc", 1)]))
        assert held(view, "b") == []

    def test_a_dead_members_slots_are_taken_after_its_leases_lapse(self, pair: tuple[Store, Store]) -> None:
        """No heartbeat from 'a': once its leases end, 'b' holds every slot."""
        a, b = pair
        result_of(a.cluster.join(beat("a", T0), TOTALS))
        result_of(a.cluster.beat(beat("a", T0), plan_claims))
        result_of(b.cluster.join(beat("b", T0 + 1), TOTALS))
        early = result_of(b.cluster.beat(beat("b", T0 + 5), plan_claims))
        assert held(early, "b") == [] and early.live == ("a", "b")
        later = result_of(b.cluster.beat(beat("b", T0 + 11), plan_claims))
        assert later.live == ("b",) and len(held(later, "b")) == 4
