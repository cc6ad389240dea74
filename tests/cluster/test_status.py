"""The cluster as the API shows it: every member's binds, tagged with the member."""

from __future__ import annotations

from bridge.cluster.slots import plan_claims
from bridge.cluster.status import ClusterStatus, binds_json
from bridge.config import StoreConfig
from bridge.smpp.types import BindStatus
from bridge.store import open_store, result_of
from bridge.store.records import Heartbeat

T0 = 1_800_000_000.0


def _bind(bind_id: str) -> BindStatus:
    return BindStatus(bind_id=bind_id, carrier=bind_id.split("-")[0], bind_type="transceiver", state="bound",
                      since=T0, window=10, in_flight=0, in_flight_peak=3, queued=0, submitted=5, throttled=0,
                      errors=0, last_error=None, reconnects=0, received=1, paused_until=None)


class TestClusterStatus:
    def test_binds_of_every_member_with_its_name(self, pg_server) -> None:  # noqa: ANN001
        """Member b lists its own binds live and a's as a reported them with its heartbeat."""
        config = StoreConfig(url=pg_server.new_database())
        a, b = open_store(config, inline=True), open_store(config, inline=True)
        beat_a = Heartbeat("a", T0, T0, T0 + 6, T0 - 10, api="127.0.0.1:1", binds=binds_json([_bind("cmcc-1")]))
        result_of(a.cluster.join(beat_a, {"cmcc": 2}))
        result_of(b.cluster.join(Heartbeat("b", T0, T0, T0 + 6, T0 - 10), {"cmcc": 2}))
        status = ClusterStatus(b.cluster, "b", own_binds=lambda: [_bind("cmcc-2")], live_after=lambda: T0 - 10)
        assert status.health()["cluster"]["live"] == []
        result_of(status.seen(result_of(b.cluster.beat(Heartbeat("b", T0, T0, T0 + 6, T0 - 10), plan_claims))))
        assert [(x.node, x.bind_id, x.submitted) for x in status.binds()] == [("b", "cmcc-2", 5), ("a", "cmcc-1", 5)]
        health = status.health()
        assert health["node"] == "b" and health["cluster"]["leader"] == "a"
        assert health["cluster"]["live"] == ["a", "b"] and health["cluster"]["slots"] == 2
        result_of(a.close())
        result_of(b.close())

    def test_an_unreadable_bind_list_is_skipped(self, pg_server) -> None:  # noqa: ANN001
        """A member writing a bind list this version cannot read does not break the listing."""
        config = StoreConfig(url=pg_server.new_database())
        a, b = open_store(config, inline=True), open_store(config, inline=True)
        result_of(a.cluster.join(Heartbeat("a", T0, T0, T0 + 6, T0 - 10, binds='[{"shape": "new"}]'), {}))
        status = ClusterStatus(b.cluster, "b", own_binds=list, live_after=lambda: T0 - 10)
        result_of(b.cluster.join(Heartbeat("b", T0, T0, T0 + 6, T0 - 10), {}))
        result_of(status.seen(result_of(b.cluster.beat(Heartbeat("b", T0, T0, T0 + 6, T0 - 10), plan_claims))))
        assert status.binds() == []
        result_of(a.close())
        result_of(b.close())
