"""Cluster mode end to end: three real daemons on one real PostgreSQL, one real simulator.

The simulator runs on its own (``smsc-sim run``) and refuses any bind beyond each
carrier's configured count, so a refused bind is the cluster holding one too many.
Waiting is on conditions with deadlines; nothing sleeps to synchronise.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Bridge, BridgeOptions, Receiver, wait_for
from tests.pgserver import PgServer

FAILOVER_S = 2.0
BINDS = {"cmcc": 3, "cucc": 1, "ctcc": 1, "cbn": 1, "intl": 1}
PREFIX = {"cmcc": "+86138", "cucc": "+86130", "ctcc": "+86133", "cbn": "+86192"}


class BindWatch:
    """Polls the simulator's /stats while the test runs: the most binds ever up per carrier."""

    def __init__(self, sim: Bridge) -> None:
        self._sim = sim
        self.peak: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def bound(self) -> dict[str, int]:
        _, stats = self._sim.sim("GET", "/stats")
        return {cid: sum(c["binds"].values()) for cid, c in stats["carriers"].items()}

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            for cid, n in self.bound().items():
                self.peak[cid] = max(self.peak[cid], n)

    def close(self) -> dict[str, int]:
        self._stop.set()
        self._thread.join(5)
        return dict(self.peak)


class Cluster:
    def __init__(self, tmp: Path, receiver: Receiver, url: str, names: tuple[str, ...]) -> None:
        extra = {cid: f"max_binds = {n}" for cid, n in BINDS.items()}
        (tmp / "sim").mkdir()
        self.sim = Bridge(tmp / "sim", receiver, BridgeOptions(external_sim=True, sim_carrier_extra=extra))
        self.nodes: dict[str, Bridge] = {}
        for name in names:
            (tmp / name).mkdir()
            opts = BridgeOptions(store_url=url, node=name, failover_s=FAILOVER_S, binds=BINDS,
                                 response_timeout_s=2.0, external_sim=True, window=2)
            self.nodes[name] = Bridge(tmp / name, receiver, opts, sim_ready=self.sim.sim_ready)

    def start(self) -> None:
        for node in self.nodes.values():
            node.start(wait_bound=False)

    def health(self, name: str) -> dict[str, Any]:
        node = self.nodes[name]
        return node.request("GET", f"{node.api}/healthz", token=None)[1]

    def bound(self, names: tuple[str, ...] | None = None) -> int:
        return sum(self.health(n)["bound"] for n in (names or tuple(self.nodes)))

    def close(self) -> None:
        for node in [*self.nodes.values(), self.sim]:
            node.close()


@pytest.fixture(name="cluster")
def _cluster(tmp_path: Path, receiver: Receiver, pg_server: PgServer) -> Iterator[Cluster]:
    c = Cluster(tmp_path, receiver, pg_server.new_database(), ("node-a", "node-b", "node-c"))
    yield c
    c.close()


def _numbers(batch: int, count: int) -> list[str]:
    carriers = ("cmcc", "cmcc", "cucc", "ctcc", "cbn")
    return [f"{PREFIX[carriers[i % len(carriers)]]}5{batch:02d}{i:05d}" for i in range(count)]


class TestThreeNodes:
    def test_kill9_of_a_node_loses_nothing_and_never_overbinds(self, cluster: Cluster, receiver: Receiver) -> None:
        """Three members share the seven binds; one is killed mid-flight; the survivors take
        its binds over within failover_s, every message gets its report, the simulator never
        sees more binds than configured, and only flagged segments were submitted twice."""
        watch = BindWatch(cluster.sim)
        cluster.start()
        total = sum(BINDS.values())
        wait_for(lambda: cluster.bound() == total and all(cluster.health(n)["bound"] for n in cluster.nodes),
                 timeout=30, what="seven binds spread over three members")
        # Slow answers and small windows: a backlog is in flight on every member at the kill.
        cluster.sim.sim("POST", "/faults", {"carrier": "*", "mode": "slow", "latency_ms": [200, 400]})
        names = list(cluster.nodes)
        ids: list[str] = []
        for batch in range(6):
            node = cluster.nodes[names[batch % 3]]
            body = f"batch {batch} " + ("长" * 80 if batch % 2 else "short")
            ids += [r["smsMsgId"] for r in node.send(_numbers(batch, 20), body=body)["result"]]
        victim = "node-b"
        held = cluster.health(victim)["bound"]
        killed_at, killed_wall = time.monotonic(), time.time()
        cluster.nodes[victim].kill9()
        survivors = ("node-a", "node-c")
        wait_for(lambda: cluster.bound(survivors) == total, timeout=3 * FAILOVER_S,
                 what="the survivors holding every bind")
        takeover_s = time.monotonic() - killed_at
        cluster.sim.sim("POST", "/faults", {"carrier": "*", "mode": "none"})
        wait_for(lambda: all(receiver.reports_for(m) for m in ids), timeout=60, what="every report")
        peak = watch.close()
        a = cluster.nodes["node-a"]
        assert a.db_count("SELECT COUNT(*) FROM messages WHERE state != 'final'") == 0
        assert a.db_count("SELECT COUNT(*) FROM segments WHERE submitted_at IS NOT NULL") >= len(ids)
        resent = a.db_count("SELECT COUNT(*) FROM segments WHERE possible_duplicate = 1")
        assert resent > 0, "the killed member had nothing in flight: the test proves nothing"
        assert a.db_count("SELECT COUNT(*) FROM outbox WHERE kind = 'report'") == len(ids)
        assert all(peak[cid] <= n for cid, n in BINDS.items()), peak
        _, stats = cluster.sim.sim("GET", "/stats")
        assert {cid: c["bind_failures"] for cid, c in stats["carriers"].items()} == dict.fromkeys(BINDS, 0)
        submits = cluster.sim.submits()
        seen = Counter((s["destination_addr"], s["text"]) for s in submits if s["status"] == 0)
        duplicated = {dest for (dest, _text), n in seen.items() if n > 1}
        flagged = {a.message(mid)["to"][1:] for mid in ids
                   if any(seg["possibleDuplicate"] for seg in a.message(mid)["segments"])}
        assert duplicated <= flagged
        # The victim's unanswered submits go out again once it is seen dead (heartbeat failover_s old).
        resend_s = min(s["time"] for s in submits if s["destination_addr"] in flagged and s["time"] > killed_wall) \
            - killed_wall
        assert held > 0 and takeover_s < FAILOVER_S + 1.0, takeover_s
        assert resend_s < FAILOVER_S + 2.0, resend_s
        print(f"cluster kill -9: {held} binds taken over in {takeover_s:.2f} s, its in-flight submits resent"
              f" after {resend_s:.2f} s (failover_s {FAILOVER_S}); {resent} segments resent flagged,"
              f" {len(duplicated)} numbers got a duplicate submit")

    def test_any_member_shows_the_cluster_and_a_graceful_stop_hands_binds_over(
            self, cluster: Cluster, receiver: Receiver) -> None:
        """/v1/binds and /healthz on any member show the whole cluster; long replies whose parts
        arrive on different members reassemble once; a member stopped with SIGTERM releases its
        slots and the others bind them before its leases could lapse."""
        cluster.start()
        total = sum(BINDS.values())
        wait_for(lambda: cluster.bound() == total and all(cluster.health(n)["bound"] for n in cluster.nodes),
                 timeout=30, what="seven binds spread over three members")
        # Any member answers for the whole cluster: every bind once, with the member holding it.
        b = cluster.nodes["node-b"]

        def cluster_binds() -> list[dict[str, Any]]:
            binds = b.request("GET", f"{b.api}/v1/binds")[1]["binds"]
            return binds if len(binds) == total and all(x["state"] == "bound" for x in binds) else []
        binds = wait_for(cluster_binds, what="node-b listing every bind of the cluster")
        assert {x["node"] for x in binds} == set(cluster.nodes)
        assert sorted(x["bind_id"] for x in binds) == sorted(f"{c}-{i}" for c, n in BINDS.items()
                                                              for i in range(1, n + 1))
        health = cluster.health("node-b")
        assert health["node"] == "node-b" and health["cluster"]["leader"] == "node-a"
        assert health["cluster"]["live"] == ["node-a", "node-b", "node-c"] and health["cluster"]["slots"] == total
        # Reports: each pushed once, by one member, whichever members took the message and its receipt.
        ids = [node.send(_numbers(7 + k, 10))["result"] for k, node in enumerate(cluster.nodes.values())]
        ids = [r["smsMsgId"] for rows in ids for r in rows]
        wait_for(lambda: all(receiver.reports_for(m) for m in ids), what="every report")
        pushes = Counter(p.body["smsMsgId"] for p in receiver.pushes if p.path == "/reports")
        assert all(pushes[m] == 1 for m in ids), pushes
        # Long replies: the simulator spreads their parts over the three members' binds; each
        # still reaches the uplink receiver once, whole.
        text = "您好，请问这个订单什么时候发货？" * 9
        sources = [f"86138123406{i:02d}" for i in range(3)]
        for source in sources:
            status, answer = cluster.sim.sim("POST", "/mo", {"carrier": "cmcc", "from": source, "to": "10690001",
                                                             "text": text, "concat": "udh8"})
            assert status == 200 and answer["segments"] == 3, answer

        def uplinks() -> list[dict[str, Any]]:
            got = [u for u in receiver.acked("/uplink") if u["from"].lstrip("+") in sources]
            return got if len(got) >= len(sources) else []
        got = wait_for(uplinks, what="three whole uplinks")
        assert sorted(u["from"].lstrip("+") for u in got) == sources and {u["body"] for u in got} == {text}
        assert cluster.nodes["node-c"].stop() == 0
        # Left before it exited: no slot names it, so nobody waits for its leases to lapse.
        assert b.db_count("SELECT COUNT(*) FROM bind_slots WHERE node = 'node-c'") == 0
        assert b.db_count("SELECT COUNT(*) FROM nodes WHERE name = 'node-c'") == 0
        wait_for(lambda: cluster.bound(("node-a", "node-b")) == total, timeout=3 * FAILOVER_S,
                 what="the others holding every bind")


class TestRulesAcrossNodes:
    def test_frequency_limit_is_exact_when_three_nodes_take_one_number_at_once(self, cluster: Cluster) -> None:
        """20 messages to one number posted concurrently over three members: 15 sent, 5 LIMIT."""
        cluster.start()
        wait_for(lambda: cluster.bound() == sum(BINDS.values()), timeout=30, what="every bind up")
        number = "+8613877770001"
        nodes = list(cluster.nodes.values())
        start = threading.Barrier(20)
        ids: list[str] = []
        lock = threading.Lock()

        def post(i: int) -> None:
            node = nodes[i % 3]
            start.wait()
            [row] = node.send([number], params=[f"{100000 + i}"], callback=False)["result"]
            with lock:
                ids.append(row["smsMsgId"])
        threads = [threading.Thread(target=post, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(ids) == 20
        a = cluster.nodes["node-a"]
        wait_for(lambda: all(a.message(m)["state"] == "final" for m in ids), timeout=30, what="all final")
        statuses = Counter(a.message(m)["status"] for m in ids)
        assert statuses["LIMIT"] == 5 and sum(statuses.values()) == 20, statuses
        sent = [s for s in cluster.sim.submits("cmcc") if s["destination_addr"] == number[1:]]
        assert len(sent) == 15


def _children(pid: int) -> set[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as fh:
        return {int(p) for p in fh.read().split()}


class TestWorkers:
    def test_two_workers_serve_one_port_and_a_dead_one_is_restarted(
            self, tmp_path: Path, receiver: Receiver, pg_server: PgServer) -> None:
        """run --workers 2: one ready line, one port; both members join; sends go through;
        a worker killed with -9 is started again under the same member name."""
        (tmp_path / "sim").mkdir()
        sim = Bridge(tmp_path / "sim", receiver, BridgeOptions(external_sim=True))
        opts = BridgeOptions(store_url=pg_server.new_database(), node="box", failover_s=FAILOVER_S,
                             external_sim=True, binds={"cmcc": 2}, run_args=("--workers", "2"))
        parent = Bridge(tmp_path, receiver, opts, sim_ready=sim.sim_ready)
        try:
            parent.start(wait_bound=False)
            assert parent.ready["workers"] == 2 and parent.ready["nodes"] == ["box-1", "box-2"]

            def live() -> list[str]:
                status, health = parent.request("GET", f"{parent.api}/healthz", token=None)
                return health["cluster"]["live"] if status == 200 else []
            wait_for(lambda: live() == ["box-1", "box-2"], what="both workers in the cluster")
            ids = [parent.send([f"+861380000{i:04d}"])["result"][0]["smsMsgId"] for i in range(10)]
            wait_for(lambda: all(receiver.reports_for(m) for m in ids), what="every report")
            assert parent.proc is not None
            workers = _children(parent.proc.pid)
            assert len(workers) == 2
            victim = min(workers)
            os.kill(victim, signal.SIGKILL)
            wait_for(lambda: len(_children(parent.proc.pid) - {victim}) == 2, timeout=10,
                     what="the killed worker restarted")
            wait_for(lambda: live() == ["box-1", "box-2"], what="both members live again")
            assert parent.send(["+8613800009999"])["result"][0]["status"] == "000000"
            assert parent.stop() == 0
        finally:
            parent.close()
            sim.close()

    def test_workers_need_postgresql(self, tmp_path: Path, receiver: Receiver) -> None:
        """On SQLite --workers is refused with one clear line."""
        bridge = Bridge(tmp_path, receiver, BridgeOptions(run_args=("--workers", "2")))
        proc = subprocess.run([sys.executable, "-m", "bridge.cli", "run", "--config", str(bridge.config_path),
                               "--workers", "2"], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 1
        assert "--workers needs a PostgreSQL store" in proc.stderr
