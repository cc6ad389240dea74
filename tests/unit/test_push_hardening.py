"""Push delivery hardening (issue 14): commit failures, receiver isolation, circuits, webhook headers.

Deterministic like tests/unit/test_outbox.py: a real Store, a ``task.Clock`` and treq's
``StubTreq`` in front of real twisted.web resources. The full-disk test puts a real SQLite
database on a real, tiny tmpfs and fills it, so COMMIT really fails (skipped where
mounting is not permitted). Real-socket scenarios run through tools/pushprobe.py.
"""

from __future__ import annotations

import base64
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from bridge.config import CallbackConfig, ConfigError, load_config
from bridge.models import OutboxItem
from bridge.outbox import Pusher
from bridge.receivers import OPEN_AFTER, Circuit, Lane
from bridge.store import Store, result_of
from bridge.store.sqlite import open_sqlite
from bridge.webhooks import WebhookKeys, sign, webhook_id
from tests.unit.test_outbox import (  # noqa: F401 (_clock, _opener, _store: the shared fixtures)
    Receiver,
    _clock,
    _opener,
    _store,
    counts,
    make,
    payload,
    queue,
    settle,
)

REPO = Path(__file__).resolve().parents[2]


class Hosts(Resource):
    """Several receivers behind one StubTreq, told apart by host: each host has a behaviour."""

    isLeaf = True

    def __init__(self, clock: Clock, behaviour: dict[str, str]) -> None:
        super().__init__()
        self.clock = clock
        self.behaviour = behaviour         # host -> "ok" | "hang" | "down"
        self.received: dict[str, list[str]] = {}
        self.acked: dict[str, list[tuple[str, float]]] = {}
        self.held: list[Request] = []

    def render_POST(self, request: Request) -> bytes | int:
        assert request.content is not None
        host = request.getRequestHostname().decode()
        ref = json.loads(request.content.read())["smsMsgId"]
        self.received.setdefault(host, []).append(ref)
        mode = self.behaviour.get(host, "ok")
        if mode == "hang":
            self.held.append(request)
            return NOT_DONE_YET
        if mode == "down":
            request.setResponseCode(503)
            return b"down"
        self.acked.setdefault(host, []).append((ref, self.clock.seconds()))
        return b"ok"


def run_for(clock: Clock, stub: StubTreq, seconds: float, step: float = 0.1) -> None:
    for _ in range(round(seconds / step)):
        settle(clock, stub)
        clock.advance(step)
    settle(clock, stub)


def make_hosts(store: Store, clock: Clock, resource: Resource, cfg: CallbackConfig,
               keys: WebhookKeys | None = None) -> tuple[Pusher, StubTreq]:
    stub = StubTreq(resource)
    extra = {"keys": keys} if keys is not None else {}
    return Pusher(store, cfg, reactor=clock, http_client=stub, rng=random.Random(3), **extra), stub


# -- 1: a store that cannot commit ------------------------------------------------------


@pytest.fixture(name="tiny_fs")
def _tiny_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "fs"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)


def fill(directory: Path) -> Path:
    """Fill the filesystem to the last byte with one file; delete it to free the space."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        chunk = 1 << 16
        while chunk:
            try:
                os.write(fd, b"\0" * chunk)
            except OSError:
                chunk //= 2
    finally:
        os.close(fd)
    return filler


class TestStoreCannotCommit:
    def test_disk_full_no_report_storm(self, tiny_fs: Path, clock: Clock) -> None:
        """Disk full: the acks of the first pushes are kept in memory while commits fail (and are
        committed once space returns), no new pushes go out meanwhile, and no report is ever
        pushed twice (the issue saw 480 POSTs for 38 reports in 30 s)."""
        store = open_sqlite(tiny_fs / "bridge.db", clock=clock, commit_interval_s=0.0)[0]
        refs = queue(store, clock, 38)
        result_of(store.flush())
        filler = fill(tiny_fs)
        receiver = Receiver(clock)
        cfg = CallbackConfig(timeout_s=10.0, max_age_s=3600.0, backoff_initial_s=1.0,
                             backoff_max_s=60.0, concurrency=8)
        pusher, stub = make(store, clock, receiver, cfg)
        pusher.start()
        run_for(clock, stub, 30.0)
        during = receiver.refs()
        assert set(during.values()) == {1} and len(during) == 8     # one round, then a pause
        assert pusher.stats.unsaved == 8                # the commits really failed...
        assert counts(store) == {"report:pending": 38}  # ...and were rolled back
        filler.unlink()
        run_for(clock, stub, 60.0)
        assert counts(store) == {"report:acked": 38}
        assert receiver.refs() == Counter({ref: 1 for ref in refs})
        assert pusher.stats.unsaved == 0 and pusher.stats.pushed == 38
        result_of(store.close())
        reopened = open_sqlite(tiny_fs / "bridge.db", clock=clock)[0]
        assert counts(reopened) == {"report:acked": 38}
        result_of(reopened.close())

    def test_commit_retries_back_off(self, tiny_fs: Path, clock: Clock) -> None:
        """While the disk stays full, commit attempts space out instead of one a pump."""
        store = open_sqlite(tiny_fs / "bridge.db", clock=clock, commit_interval_s=0.0)[0]
        queue(store, clock, 5)
        result_of(store.flush())
        fill(tiny_fs)
        pusher, stub = make(store, clock, Receiver(clock), CallbackConfig(backoff_initial_s=1.0))
        pusher.start()
        from structlog.testing import capture_logs

        with capture_logs() as logs:
            run_for(clock, stub, 120.0, step=0.5)
        failures = [e for e in logs if e["event"] == "push.commit_failed"]
        assert 5 <= len(failures) <= 40      # exponential to 10 s, not one retry a pump
        delays = [e["retry_in_s"] for e in failures]
        assert max(delays) > 4 and all(d <= 10.0 for d in delays)


# -- 2: one slow receiver does not delay the others ----------------------------------------


class TestIsolation:
    def test_hanging_receiver_does_not_delay_others(self, clock: Clock, store: Store) -> None:
        """60 reports to a receiver that never answers, then 20 to a healthy one: the healthy
        ones are all acknowledged at once, long before the hanging ones time out."""
        resource = Hosts(clock, {"slow.test": "hang"})
        queue(store, clock, 60, url="http://slow.test/cb", prefix="s")
        clock.advance(0.001)
        fast = queue(store, clock, 20, url="http://fast.test/cb", prefix="f")
        cfg = CallbackConfig(timeout_s=30.0, concurrency=8, receiver_concurrency=4)
        pusher, stub = make_hosts(store, clock, resource, cfg)
        pusher.start()
        settle(clock, stub)
        assert sorted(ref for ref, _ in resource.acked.get("fast.test", [])) == sorted(fast)
        assert all(at == clock.seconds() for _, at in resource.acked["fast.test"])
        assert len(resource.held) == 4                    # the slow receiver's cap, no more
        assert pusher.stats.failed == 0                   # nothing has even timed out yet

    def test_large_backlog_does_not_crowd_the_fetch(self, clock: Clock, store: Store) -> None:
        """A receiver with a backlog far larger than it can take is parked in the store
        (no attempt counted) so the fetch still reaches other receivers' rows."""
        resource = Hosts(clock, {"slow.test": "hang"})
        queue(store, clock, 500, url="http://slow.test/cb", prefix="s")
        clock.advance(0.001)
        fast = queue(store, clock, 5, url="http://fast.test/cb", prefix="f")
        cfg = CallbackConfig(timeout_s=30.0, concurrency=4, receiver_concurrency=2)
        pusher, stub = make_hosts(store, clock, resource, cfg)
        pusher.start()
        settle(clock, stub)
        assert sorted(ref for ref, _ in resource.acked.get("fast.test", [])) == sorted(fast)
        slow_rows = [i for i in result_of(store.outbox.due(float("inf"), 10_000)) if i.ref_id.startswith("s")]
        assert len(slow_rows) == 500 and all(i.attempts == 0 for i in slow_rows)
        assert pusher.stats.pending <= 2 + 16             # in flight + held, not the whole backlog


# -- 6: back off per receiver; drain at full speed once it is back ---------------------------


class TestCircuit:
    def _outage(self, clock: Clock, store: Store, down_s: float) -> tuple[Hosts, Pusher, StubTreq, list[str]]:
        resource = Hosts(clock, {"rx.test": "down"})
        refs = []
        cfg = CallbackConfig(timeout_s=10.0, max_age_s=86_400.0, backoff_initial_s=1.0,
                             backoff_max_s=300.0, concurrency=16, receiver_concurrency=8)
        pusher, stub = make_hosts(store, clock, resource, cfg)
        pusher.start()
        for second in range(int(down_s)):     # reports keep coming during the outage
            refs += queue(store, clock, 5, url="http://rx.test/cb", prefix=f"t{second}-")
            pusher.wake()
            run_for(clock, stub, 1.0)
        return resource, pusher, stub, refs

    def test_only_probes_while_down(self, clock: Clock, store: Store) -> None:
        """While the receiver is down, after the first round only single probes reach it, at
        its backoff; rows are not each retried on their own schedule."""
        resource, pusher, _stub, refs = self._outage(clock, store, 60)
        attempts = len(resource.received["rx.test"])
        assert attempts <= 8 + 10, attempts   # the first round (lane cap) plus probes
        assert pusher.stats.open_circuits == 1
        attempted = sum(1 for i in result_of(store.outbox.due(float("inf"), 10_000)) if i.attempts)
        assert attempted <= 8 + 10 and len(refs) == 300

    def test_drains_backlog_once_a_probe_succeeds(self, clock: Clock, store: Store) -> None:
        """After 60 s down, the whole backlog arrives within one probe interval of recovery."""
        resource, pusher, stub, refs = self._outage(clock, store, 60)
        resource.behaviour["rx.test"] = "ok"
        up_at = clock.seconds()
        run_for(clock, stub, 20.0)
        acked = resource.acked.get("rx.test", [])
        assert Counter(ref for ref, _ in acked) == Counter({ref: 1 for ref in refs})
        last = max(at for _, at in acked)
        assert last - up_at <= 15.0 + 0.5     # the probe interval's ceiling, then one drain
        assert counts(store) == {"report:acked": len(refs)}
        assert pusher.stats.open_circuits == 0

    def test_one_bad_report_does_not_open_the_circuit(self, clock: Clock, store: Store) -> None:
        """A single failing report retries on its own backoff while the others flow."""
        receiver = Receiver(clock, 500)
        refs = queue(store, clock, 6)
        pusher, stub = make(store, clock, receiver, CallbackConfig(concurrency=1, backoff_initial_s=1.0))
        pusher.start()
        run_for(clock, stub, 0.5)
        assert pusher.stats.open_circuits == 0
        assert sorted(set(receiver.refs())) == refs[:6]
        run_for(clock, stub, 3.0)
        assert counts(store) == {"report:acked": 6}

    def test_held_rows_die_at_their_deadline(self, clock: Clock, store: Store) -> None:
        """Rows never attempted because the receiver stayed down are dead-lettered at max_age."""
        resource = Hosts(clock, {"rx.test": "down"})
        queue(store, clock, 30, url="http://rx.test/cb")
        cfg = CallbackConfig(max_age_s=20.0, backoff_initial_s=1.0, backoff_max_s=4.0,
                             concurrency=4, receiver_concurrency=2)
        pusher, stub = make_hosts(store, clock, resource, cfg)
        pusher.start()
        run_for(clock, stub, 40.0)
        assert counts(store) == {"report:dead": 30}
        assert len(resource.received["rx.test"]) < 30


class TestLane:
    """The per-receiver circuit on its own: a state machine driven by outcomes and time."""

    def test_opens_after_consecutive_failures_and_probes_alone(self) -> None:
        lane = Lane("rx:80", lambda n: 2.0 ** n)
        for _ in range(OPEN_AFTER):
            assert lane.can_send(0.0, cap=4)
            lane.launched()
            lane.failed(0.0)
        assert lane.circuit is Circuit.OPEN and lane.probe_at == 1.0
        assert not lane.can_send(0.5, cap=4) and lane.can_send(1.0, cap=4)
        lane.launched()
        assert lane.circuit is Circuit.PROBING and not lane.can_send(1.0, cap=4)
        lane.failed(1.5)
        assert lane.circuit is Circuit.OPEN and lane.probe_at == 1.5 + 2.0   # backs off
        lane.launched()
        assert lane.succeeded() and lane.circuit is Circuit.CLOSED and lane.can_send(9.0, cap=4)

    def test_a_success_resets_the_count(self) -> None:
        lane = Lane("rx:80", lambda n: 1.0)
        for ok in (False, False, True, False, False):
            lane.launched()
            lane.succeeded() if ok else lane.failed(0.0)
        assert lane.circuit is Circuit.CLOSED

    def test_abandoned_probe_does_not_count(self) -> None:
        lane = Lane("rx:80", lambda n: 1.0)
        lane.circuit, lane.probe_at = Circuit.OPEN, 0.0
        lane.launched()
        lane.abandoned()
        assert lane.circuit is Circuit.OPEN and lane.failed_probes == 0 and lane.in_flight == 0


# -- 4: Standard Webhooks headers ---------------------------------------------------------

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


class Headers(Resource):
    isLeaf = True

    def __init__(self, *codes: int) -> None:
        super().__init__()
        self.codes = list(codes)
        self.got: list[tuple[dict[str, str], bytes]] = []

    def render_POST(self, request: Request) -> bytes:
        assert request.content is not None
        headers = {k.decode().lower(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()}
        self.got.append((headers, request.content.read()))
        request.setResponseCode(self.codes.pop(0) if self.codes else 200)
        return b""


class TestWebhookHeaders:
    def test_signed_and_verifiable(self, clock: Clock, store: Store) -> None:
        """A push verifies with the standardwebhooks library; retries keep the webhook-id."""
        clock.advance(time.time())
        store.outbox.queue("report", "m0", "http://rx.test/cb", payload("m0"), clock.seconds())
        resource = Headers(503)
        keys = WebhookKeys(by_channel={"10690001": base64.b64decode(SECRET[6:])}, by_uplink_url={})
        pusher, stub = make_hosts(store, clock, resource, CallbackConfig(backoff_initial_s=1.0), keys)
        pusher.start()
        run_for(clock, stub, 3.0)
        assert len(resource.got) == 2
        (first, body1), (second, body2) = resource.got
        assert first["webhook-id"] == second["webhook-id"] == "msg_m0"
        assert int(second["webhook-timestamp"]) > int(first["webhook-timestamp"])
        for headers, body in resource.got:
            assert headers["webhook-signature"].startswith("v1,")
            Webhook(SECRET).verify(body, headers)       # raises if the signature is wrong
        with pytest.raises(Exception):                   # noqa: B017 (the library's own error type)
            Webhook(SECRET).verify(body1 + b" ", first)

    def test_unsigned_without_secret(self, clock: Clock, store: Store) -> None:
        store.outbox.queue("uplink", "mo1", "http://rx.test/up", '{"smsMsgId":"mo1"}', 0.0)
        resource = Headers()
        pusher, stub = make_hosts(store, clock, resource, CallbackConfig())
        pusher.start()
        settle(clock, stub)
        [(headers, _)] = resource.got
        assert headers["webhook-id"] == "mo_mo1" and "webhook-timestamp" in headers
        assert "webhook-signature" not in headers

    def test_ids(self) -> None:
        item = OutboxItem(7, "replay", "m0", "http://x/", "{}", 0, 0.0, 0.0)
        assert webhook_id(item) == "replay_7"
        assert webhook_id(OutboxItem(8, "report", "m0", "http://x/", "{}", 0, 0.0, 0.0)) == "msg_m0"
        # The spec's own example vector (standard-webhooks/standard-webhooks README).
        key = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        body = b'{"test": 2432232314}'
        assert sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == \
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

    def test_keys_from_config(self, tmp_path: Path) -> None:
        path = tmp_path / "c.toml"
        path.write_text(f"""
[[apps]]
id = "a"
token = "t"
uplink_url = "https://a.example/up"
webhook_secret = "{SECRET}"

[[apps]]
id = "b"
token = "u"
uplink_url = "https://b.example/up"

[[channels]]
number = "10690001"
signature = "S"
app = "a"

[[channels]]
number = "10690002"
signature = "S"
app = "b"
""", encoding="utf-8")
        keys = WebhookKeys.from_config(load_config(path))
        report = OutboxItem(1, "report", "m", "https://cb.example/", '{"from":"10690001"}', 0, 0.0, 0.0)
        other = OutboxItem(2, "report", "m", "https://cb.example/", '{"from":"10690002"}', 0, 0.0, 0.0)
        uplink = OutboxItem(3, "uplink", "m", "https://a.example/up", "{}", 0, 0.0, 0.0)
        assert keys.secret_for(report) == keys.secret_for(uplink) == base64.b64decode(SECRET[6:])
        assert keys.secret_for(other) is None
        assert SECRET not in repr(load_config(path))


# -- config --------------------------------------------------------------------------------

APP = '\n[[apps]]\nid = "a"\ntoken = "t"\n'


class TestConfig:
    def test_default_allows_the_demo_receiver_only(self) -> None:
        assert load_config().callbacks.allow_private == frozenset({"127.0.0.1:9000"})

    @pytest.mark.parametrize(("text", "expected"), [
        ('[callbacks]\nallow_private = ["127.0.0.1"]\n', "callbacks.allow_private[0]: expected \"host:port\" with a port"),
        ('[callbacks]\nallow_private = ["h:70000"]\n', "callbacks.allow_private[0]: expected \"host:port\", got 'h:70000' (Port out of range"),
        ('[callbacks]\nallow_private = "127.0.0.1:9000"\n', "callbacks.allow_private: expected a list of strings"),
        (APP + 'webhook_secret = "hunter2"\n', "apps[0].webhook_secret: expected \"whsec_\""),
        (APP + 'webhook_secret = "whsec_c2hvcnQ="\n', "apps[0].webhook_secret: expected \"whsec_\""),
        (APP + 'webhook_secret_env = "NO_SUCH_VAR_X"\n', "apps[0].webhook_secret_env: environment variable"),
    ])
    def test_errors(self, tmp_path: Path, text: str, expected: str) -> None:
        path = tmp_path / "bad.toml"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(ConfigError) as err:
            load_config(path)
        assert expected in str(err.value)

    def test_canonical_entries(self, tmp_path: Path) -> None:
        path = tmp_path / "c.toml"
        path.write_text('[callbacks]\nallow_private = ["127.1:9000", "[::1]:80"]\n', encoding="utf-8")
        assert load_config(path).callbacks.allow_private == frozenset({"127.0.0.1:9000", "[::1]:80"})


# -- real sockets --------------------------------------------------------------------------


def pushprobe(*args: str) -> dict[str, object]:
    """Run a tools/pushprobe.py scenario (real reactor, real sockets) in its small mode."""
    proc = subprocess.run([sys.executable, "-m", "tools.pushprobe", *args, "--small", "--json"], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    result = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {}
    if proc.returncode == 3:
        pytest.skip(str(result.get("skip")))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return result["values"]


class TestRealSockets:
    def test_hanging_receiver(self) -> None:
        """Every report to the healthy receiver arrived while all those to the hanging one
        were still open and none had failed yet."""
        got = pushprobe("hang")
        assert got["healthy_received"] == 40
        assert got["hanging_open_requests_at_end"] == 12 and got["failed_while_measuring"] == 0

    def test_outage_then_drain(self) -> None:
        """Connections refused for a while: few real attempts while down, then every report
        once after the receiver listens again."""
        got = pushprobe("outage")
        assert got["received"] == 60 and got["duplicates"] == 0
        assert got["attempts_while_down"] <= 16 + 8   # the first round plus probes, not 60 rows each

    def test_name_resolving_to_loopback_is_refused_at_push_time(self) -> None:
        got = pushprobe("ssrf")
        assert got["received"] == ["allowed"]
        assert "resolves to" in str(got["dead_error"]) and "loopback" in str(got["dead_error"])

    def test_disk_full(self) -> None:
        got = pushprobe("diskfull")
        assert got["max_posts_per_report"] == 1 and got["reports_received"] == 10
