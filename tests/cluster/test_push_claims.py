"""Push claims: a pending push is pushed by one member at a time; a dead member's move on."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bridge.config import StoreConfig
from bridge.store import Store, open_store, result_of
from bridge.store.records import Heartbeat

T0 = 1_800_000_000.0


def _join(store: Store, node: str, now: float) -> None:
    result_of(store.cluster.join(Heartbeat(node, now, now, now + 6, now - 10), {}))


@pytest.fixture(name="pair")
def _pair(pg_server) -> Iterator[tuple[Store, Store]]:  # noqa: ANN001
    config = StoreConfig(url=pg_server.new_database())
    a = open_store(config, inline=True, node="a", failover_s=10)
    b = open_store(config, inline=True, node="b", failover_s=10)
    _join(a, "a", T0)
    _join(b, "b", T0)
    for i in range(4):
        result_of(a.outbox.queue("report", f"m{i}", "http://r.example/cb", "{}", T0))
    yield a, b
    result_of(a.close())
    result_of(b.close())


class TestPushClaims:
    def test_rows_claimed_by_a_live_member_are_not_offered_to_another(self, pair: tuple[Store, Store]) -> None:
        """'a' claims the first two; 'b' gets only the other two, and 'a' keeps getting its own."""
        a, b = pair
        assert [i.ref_id for i in result_of(a.outbox.due(T0 + 1, 2))] == ["m0", "m1"]
        assert [i.ref_id for i in result_of(b.outbox.due(T0 + 1, 10))] == ["m2", "m3"]
        assert [i.ref_id for i in result_of(a.outbox.due(T0 + 1, 10))] == ["m0", "m1"]

    def test_a_dead_members_claims_are_taken_over(self, pair: tuple[Store, Store]) -> None:
        """Once a's heartbeat is older than failover_s, its claimed rows are b's to push."""
        a, b = pair
        result_of(a.outbox.due(T0 + 1, 10))
        assert result_of(b.outbox.due(T0 + 5, 10)) == []
        _join(b, "b", T0 + 11)
        assert len(result_of(b.outbox.due(T0 + 11, 10))) == 4

    def test_leaving_releases_claims_at_once(self, pair: tuple[Store, Store]) -> None:
        """A graceful stop gives the pending rows back without waiting for the failover time."""
        a, b = pair
        result_of(a.outbox.due(T0 + 1, 10))
        result_of(a.cluster.leave("a"))
        assert len(result_of(b.outbox.due(T0 + 1, 10))) == 4

    def test_exclude_still_skips_rows_in_flight(self, pair: tuple[Store, Store]) -> None:
        """The pusher's own in-flight rows are left out of the page, as before."""
        a, _ = pair
        first = result_of(a.outbox.due(T0 + 1, 10))
        assert [i.ref_id for i in result_of(a.outbox.due(T0 + 1, 10, exclude=[first[0].id]))] == ["m1", "m2", "m3"]
