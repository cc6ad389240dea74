"""Membership: heartbeats on a timer, the view, leadership, leaving."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.task import Clock

from bridge.cluster.membership import Membership
from bridge.cluster.timing import ClusterTiming, node_name
from bridge.config import ClusterConfig, StoreConfig
from bridge.store import open_store, result_of
from bridge.store.records import ClusterView

T0 = 1_800_000_000.0


def _member(tmp_path: Path, name: str = "a") -> tuple[Membership, Clock, list[ClusterView]]:
    clock = Clock()
    clock.advance(T0)
    store = open_store(StoreConfig(path=tmp_path / "b.db"), inline=True)
    views: list[ClusterView] = []
    m = Membership(store.cluster, name, ClusterTiming(2.0), {"cmcc": 2}, clock=clock,
                   api=lambda: "127.0.0.1:1", on_view=views.append)
    return m, clock, views


class TestMembership:
    def test_beats_every_heartbeat_interval(self, tmp_path: Path) -> None:
        """The first beat is at start, then one per failover_s / 6."""
        m, clock, views = _member(tmp_path)
        result_of(m.join())
        m.startService()
        assert len(views) == 1 and m.is_leader
        clock.pump([2.0 / 6] * 5)
        assert len(views) == 6
        assert [s.node for s in views[-1].slots] == ["a", "a"]
        assert views[-1].slots[0].lease_until == clock.seconds() + 1.2

    def test_leaving_releases_every_slot(self, tmp_path: Path) -> None:
        """Stopping the service stops the beats and frees the slots at once."""
        m, clock, views = _member(tmp_path)
        result_of(m.join())
        m.startService()
        result_of(m.stopService())
        clock.advance(10)
        assert len(views) == 1
        assert {s.node for s in result_of(m._store.slots())} == {None}

    def test_stop_claiming_renews_but_takes_nothing(self, tmp_path: Path) -> None:
        """While shutting down, a member takes no slot it did not already hold."""
        m, _, views = _member(tmp_path)
        result_of(m.join())
        m.stop_claiming()
        m.startService()
        assert [s.node for s in views[-1].slots] == [None, None]


class TestNodeName:
    def test_configured_name_and_worker_suffix(self) -> None:
        """[cluster] node is used as is; run --workers adds -N."""
        assert node_name(ClusterConfig(node="edge")) == "edge"
        assert node_name(ClusterConfig(node="edge"), worker=2) == "edge-2"

    def test_default_is_host_and_pid(self) -> None:
        """Without a name, host name and pid tell instances apart."""
        import os
        import socket

        assert node_name(ClusterConfig()) == f"{socket.gethostname()}-{os.getpid()}"
