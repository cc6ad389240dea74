"""Dispatch claims across members: who took a segment, per-message order, orphans resent."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bridge.config import StoreConfig
from bridge.store import Store, open_store, result_of
from bridge.store.records import Heartbeat, SubmitAccepted
from tests.conftest import Backend
from tests.store.test_contract import _msg

T0 = 1_800_000_000.0


def _join(store: Store, node: str, now: float) -> None:
    result_of(store.cluster.join(Heartbeat(node, now, now, now + 6, now - 10), {}))


def _states(store: Store, mid: str) -> list[tuple[str, bool]]:
    return [(d.state, d.possible_duplicate) for d in result_of(store.messages.segment_details(mid))]


class TestOrphans:
    @pytest.fixture(name="store")
    def _store(self, store_backend: Backend) -> Iterator[Store]:
        store = open_store(store_backend.config, inline=True, node="a")
        yield store
        result_of(store.close())

    def test_own_dispatched_rows_are_resent_at_start(self, store: Store) -> None:
        """A member restarting under its name resends what it had dispatched, flagged."""
        _join(store, "a", T0)
        result_of(store.messages.insert([_msg("m1")]))
        result_of(store.messages.take_queued("cmcc", 10))
        assert result_of(store.cluster.requeue_orphans(T0 - 10)) == 0      # a is alive: not an orphan
        assert result_of(store.cluster.requeue_orphans(T0 - 10, own="a")) == 1
        assert _states(store, "m1") == [("queued", True)]

    def test_a_dead_members_rows_are_resent(self, store: Store) -> None:
        """Once a's heartbeat is older than the failover time, its dispatched rows go back."""
        _join(store, "a", T0)
        result_of(store.messages.insert([_msg("m1")]))
        result_of(store.messages.take_queued("cmcc", 10))
        assert result_of(store.cluster.requeue_orphans(T0 + 1)) == 1
        assert _states(store, "m1") == [("queued", True)]


class TestSharedClaims:
    @pytest.fixture(name="pair")
    def _pair(self, pg_server) -> Iterator[tuple[Store, Store]]:  # noqa: ANN001
        config = StoreConfig(url=pg_server.new_database())
        a, b = open_store(config, inline=True, node="a"), open_store(config, inline=True, node="b")
        _join(a, "a", T0)
        _join(b, "b", T0)
        yield a, b
        result_of(a.close())
        result_of(b.close())

    def test_a_live_members_rows_stay_its_own(self, pair: tuple[Store, Store]) -> None:
        """The leader's sweep leaves a live member's dispatched rows alone."""
        a, b = pair
        result_of(a.messages.insert([_msg("m1")]))
        result_of(a.messages.take_queued("cmcc", 10))
        assert result_of(b.cluster.requeue_orphans(T0 - 10)) == 0
        assert _states(a, "m1") == [("dispatched", False)]

    def test_parts_of_one_message_do_not_overtake_across_members(self, pair: tuple[Store, Store]) -> None:
        """Part 2 waits while part 1 is out with another member; once part 1 is submitted it may go."""
        a, b = pair
        result_of(a.messages.insert([_msg("m1", segments=3)]))
        [first] = result_of(a.messages.take_queued("cmcc", 1))
        assert first.seq == 1
        assert result_of(b.messages.take_queued("cmcc", 10)) == []
        assert [st for st, _ in _states(a, "m1")] == ["dispatched", "queued", "queued"]
        result_of(a.messages.record_submitted([SubmitAccepted(first.id, "cmcc", "c1", "c1", T0, False)]))
        assert [s.seq for s in result_of(b.messages.take_queued("cmcc", 10))] == [2, 3]

    def test_the_taking_member_may_send_its_next_part(self, pair: tuple[Store, Store]) -> None:
        """Its own link orders the parts: the member holding part 1 may take part 2 at once."""
        a, _ = pair
        result_of(a.messages.insert([_msg("m1", segments=2)]))
        assert [s.seq for s in result_of(a.messages.take_queued("cmcc", 1))] == [1]
        assert [s.seq for s in result_of(a.messages.take_queued("cmcc", 1))] == [2]
