"""The bind-slot planner: fair shares, claims of free slots, hand-over of a surplus."""

from __future__ import annotations

import pytest

from bridge.cluster.slots import fair_share, plan_claims, plan_surplus
from bridge.store.records import ClusterView, SlotLease

NOW = 1000.0


def _view(live: tuple[str, ...], *slots: tuple[str, int, str | None, float],
          sharing: tuple[str, ...] | None = None) -> ClusterView:
    return ClusterView(NOW, live, tuple(SlotLease(*s) for s in slots), live if sharing is None else sharing)


class TestFairShare:
    @pytest.mark.parametrize(("total", "n", "shares"), [
        (3, 3, [1, 1, 1]), (4, 3, [2, 1, 1]), (1, 3, [1, 0, 0]), (2, 1, [2]), (5, 2, [3, 2]),
    ])
    def test_shares_add_up_to_the_total(self, total: int, n: int, shares: list[int]) -> None:
        """Every slot has exactly one rightful member; the remainder goes to the first ones."""
        live = tuple(f"n{i}" for i in range(n))
        assert [fair_share(live, m, total, 0) for m in live] == shares

    def test_remainders_rotate_over_carriers(self) -> None:
        """Three one-bind carriers on three members land on three different members."""
        live = ("a", "b", "c")
        owners = [next(m for m in live if fair_share(live, m, 1, k)) for k in range(3)]
        assert sorted(owners) == ["a", "b", "c"]

    def test_a_dead_member_gets_nothing(self) -> None:
        """Only live members have a share."""
        assert fair_share(("a",), "b", 3, 0) == 0


class TestClaims:
    def test_alone_takes_every_free_slot(self) -> None:
        """A lone member takes all slots; an expired lease counts as free."""
        view = _view(("a",), ("cmcc", 1, None, 0), ("cmcc", 2, "dead", NOW - 1), ("cucc", 1, None, 0))
        assert plan_claims(view, "a") == [("cmcc", 1), ("cmcc", 2), ("cucc", 1)]

    def test_takes_only_up_to_its_share(self) -> None:
        """With two members, one takes its half, leaving the rest for the other."""
        view = _view(("a", "b"), *(("cmcc", i, None, 0.0) for i in range(1, 5)))
        assert plan_claims(view, "b") == [("cmcc", 1), ("cmcc", 2)]

    def test_never_takes_a_live_lease(self) -> None:
        """A slot held by a live lease is not free, whoever holds it."""
        view = _view(("a", "b"), ("cmcc", 1, "b", NOW + 5), ("cmcc", 2, "b", NOW + 5))
        assert plan_claims(view, "a") == []

    def test_takes_over_a_dead_members_expired_slots(self) -> None:
        """After the lease of a dead member lapses, the survivors share its slots."""
        view = _view(("a", "b"), ("cmcc", 1, "a", NOW + 5), ("cmcc", 2, "c", NOW - 0.1),
                     ("cmcc", 3, "b", NOW + 5), ("cmcc", 4, "c", NOW - 0.1))
        assert plan_claims(view, "a") == [("cmcc", 2)]
        assert plan_claims(view, "b") == [("cmcc", 2)]   # one of them wins the compare-and-set


    def test_a_member_silent_for_a_lease_period_gets_no_share_while_still_live(self) -> None:
        """'c' is still live but has not beaten for a lease period: 'a' and 'b' share its
        slots as soon as its leases end instead of waiting for it to drop out of the live list."""
        view = _view(("a", "b", "c"), ("cmcc", 1, "a", NOW + 5), ("cmcc", 2, "b", NOW + 5),
                     ("cmcc", 3, "c", NOW - 0.1), ("cucc", 1, "c", NOW - 0.1), sharing=("a", "b"))
        claims = plan_claims(view, "a") + plan_claims(view, "b")
        assert sorted(claims) == [("cmcc", 3), ("cucc", 1)]


class TestSurplus:
    def test_gives_back_when_a_newcomer_is_short(self) -> None:
        """The first member holds all three binds; when two more join it hands two over."""
        view = _view(("a", "b", "c"), *(("cmcc", i, "a", NOW + 5) for i in range(1, 4)))
        assert plan_surplus(view, "a") == [("cmcc", 3), ("cmcc", 2)]
        assert plan_surplus(view, "b") == []

    def test_keeps_its_slots_while_one_is_free(self) -> None:
        """A short member takes a free slot first; nobody is asked to give one back."""
        view = _view(("a", "b"), ("cmcc", 1, "a", NOW + 5), ("cmcc", 2, "a", NOW + 5), ("cmcc", 3, None, 0.0))
        assert plan_surplus(view, "a") == []

    def test_settled_cluster_moves_nothing(self) -> None:
        """Everyone at their share: no claims, no hand-over."""
        view = _view(("a", "b"), ("cmcc", 1, "a", NOW + 5), ("cmcc", 2, "b", NOW + 5))
        assert [plan_claims(view, m) + plan_surplus(view, m) for m in ("a", "b")] == [[], []]
