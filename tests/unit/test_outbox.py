"""The push outbox: acknowledgement, retry with backoff, dead letters, bounds, restart.

Deterministic: a real store (embedded SQLite and a real PostgreSQL, opened inline), a
``task.Clock`` and treq's ``StubTreq`` in front of a real twisted.web resource (or
``agent_spy`` for transport errors). What is about SQLite's group commit runs on SQLite
only. One test runs the pusher on the real reactor against a real HTTP server, in a
subprocess (see ``_live``).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs
from treq._agentspy import agent_spy  # treq's own test double; not re-exported in 26.7
from treq.client import HTTPClient
from treq.testing import StubTreq
from twisted.internet.error import ConnectionRefusedError, DNSLookupError
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from bridge.config import CallbackConfig, StoreConfig
from bridge.outbox import Pusher, PushStats, backoff_delay
from bridge.store import Store, open_store, result_of
from bridge.store.records import DeadPush
from bridge.store.sqlite import open_sqlite
from tests.conftest import Backend
from tests.storeopen import Opener

URL = "http://receiver.test/cb"
HOLD = -1  # a scripted answer: keep the request open until the test answers it
CFG = CallbackConfig(timeout_s=10.0, max_age_s=3600.0, backoff_initial_s=1.0,
                     backoff_max_s=60.0, allowed_hosts=frozenset(), concurrency=4)


@dataclass(frozen=True, slots=True)
class Received:
    path: str
    content_type: str | None
    body: bytes
    at: float

    @property
    def ref(self) -> str:
        return json.loads(self.body)["smsMsgId"]


class Receiver(Resource):
    """A customer's endpoint: records every POST and answers from a script (default 200)."""

    isLeaf = True

    def __init__(self, clock: Clock, *answers: int) -> None:
        super().__init__()
        self.clock = clock
        self.answers: deque[int] = deque(answers)
        self.received: list[Received] = []
        self.held: list[Request] = []
        self.aborted = 0
        self.open = 0
        self.peak = 0

    def render_POST(self, request: Request) -> bytes | int:
        assert request.content is not None
        self.received.append(Received(request.path.decode(), request.getHeader("content-type"),
                                      request.content.read(), self.clock.seconds()))
        answer = self.answers.popleft() if self.answers else 200
        if answer == HOLD:
            self.open += 1
            self.peak = max(self.peak, self.open)
            self.held.append(request)
            request.notifyFinish().addErrback(self._lost)
            return NOT_DONE_YET
        request.setResponseCode(answer)
        if 300 <= answer < 400:
            request.setHeader("location", "http://receiver.test/elsewhere")
        return b'{"ok": true}'

    def _lost(self, _: object) -> None:
        self.aborted += 1
        self.open -= 1

    def release(self, code: int = 200) -> None:
        """Answer the oldest held request."""
        request = self.held.pop(0)
        self.open -= 1
        request.setResponseCode(code)
        request.write(b"done")
        request.finish()

    def refs(self) -> Counter[str]:
        return Counter(r.ref for r in self.received)


@pytest.fixture(name="clock")
def _clock() -> Clock:
    return Clock()


@pytest.fixture(name="opener")
def _opener(store_backend: Backend, clock: Clock, tmp_path: Path) -> Iterator[Opener]:
    opener = Opener(store_backend, clock, tmp_path / "bridge.db", commit_interval_s=0.0)
    yield opener
    opener.close_all()


@pytest.fixture(name="store")
def _store(opener: Opener) -> Store:
    return opener.open(memory=True)


@pytest.fixture(name="group_commit_store")
def _group_commit_store(clock: Clock) -> Iterator[Store]:
    """SQLite with its 5 ms group commit on the clock."""
    store, _ = open_sqlite(":memory:", clock=clock, commit_interval_s=0.005)
    yield store
    result_of(store.close())


def payload(ref: str) -> str:
    return json.dumps({"smsMsgId": ref, "from": "10690001", "to": "+8613812345678",
                       "status": "DELIVRD", "orgCode": "DELIVRD"}, separators=(",", ":"))


def queue(store: Store, clock: Clock, n: int, url: str = URL, prefix: str = "m") -> list[str]:
    refs = [f"{prefix}{i}" for i in range(n)]
    for ref in refs:
        assert result_of(store.outbox.queue("report", ref, url, payload(ref), clock.seconds())) is not None
    return refs


def make(store: Store, clock: Clock, receiver: Receiver, cfg: CallbackConfig = CFG,
         seed: int = 1) -> tuple[Pusher, StubTreq]:
    stub = StubTreq(receiver)
    pusher = Pusher(store, cfg, reactor=clock, http_client=stub, rng=random.Random(seed))
    return pusher, stub


def settle(clock: Clock, stub: StubTreq | None = None) -> None:
    """Run everything due now: pumps, commits, in-memory HTTP exchanges."""
    for _ in range(3):
        if stub is not None:
            stub.flush()
        clock.advance(0)


def pending(store: Store) -> dict[str, tuple[int, float]]:
    """ref -> (attempts, next_attempt_at) of every pending row."""
    return {i.ref_id: (i.attempts, i.next_attempt_at)
            for i in result_of(store.outbox.due(float("inf"), 10_000))}


def counts(store: Store) -> dict[str, int]:
    """"kind:state" -> rows."""
    return {f"{c.kind}:{c.state}": c.count for c in result_of(store.outbox.counts())}


def dead_pushes(store: Store) -> list[DeadPush]:
    return result_of(store.outbox.dead())


def queue_one(store: Store, kind: str, ref: str, url: str, body: str, now: float) -> None:
    assert result_of(store.outbox.queue(kind, ref, url, body, now)) is not None


class TestAcknowledge:
    @pytest.mark.parametrize("code", [200, 201, 202, 204, 299])
    def test_2xx_acknowledges(self, clock: Clock, store: Store, code: int) -> None:
        """Any 2xx marks the row acknowledged after exactly one POST of the payload."""
        receiver = Receiver(clock, code, code, code)
        refs = queue(store, clock, 3)
        pusher, stub = make(store, clock, receiver)
        pusher.start()
        settle(clock, stub)
        assert sorted(receiver.refs()) == refs and set(receiver.refs().values()) == {1}
        assert counts(store) == {"report:acked": 3}
        assert pusher.stats == PushStats(pushed=3, failed=0, dead=0, in_flight=0, pending=0)

    def test_request_shape(self, clock: Clock, store: Store) -> None:
        """The payload is POSTed verbatim as UTF-8 JSON to the row's URL."""
        receiver = Receiver(clock)
        body = json.dumps({"smsMsgId": "m0", "body": "你好 ünïcode"}, ensure_ascii=False)
        queue_one(store, "uplink", "m0", "http://receiver.test/up?k=1", body, 0.0)
        pusher, stub = make(store, clock, receiver)
        pusher.start()
        settle(clock, stub)
        [got] = receiver.received
        assert got.path == "/up"
        assert got.content_type == "application/json; charset=utf-8"
        assert got.body == body.encode("utf-8")
        assert counts(store) == {"uplink:acked": 1}

    def test_acks_share_one_commit(self, clock: Clock, group_commit_store: Store) -> None:
        """SQLite: many acknowledgements are recorded in one group commit, not one each."""
        store = group_commit_store
        queue(store, clock, 10)
        result_of(store.flush())
        pusher, stub = make(store, clock, Receiver(clock),
                            CallbackConfig(concurrency=10, backoff_initial_s=1.0))
        pusher.start()
        settle(clock, stub)            # fetch and push all ten
        before = store.commits
        clock.advance(0.005)           # the group commit covering the acks
        settle(clock, stub)
        assert counts(store) == {"report:acked": 10}
        assert store.commits - before == 1


class TestRetry:
    def test_500_then_200(self, clock: Clock, store: Store) -> None:
        """A 500 is retried after the backoff, durably, and acknowledged exactly once."""
        receiver = Receiver(clock, 500, 200)
        queue(store, clock, 1)
        pusher, stub = make(store, clock, receiver)
        with capture_logs() as logs:
            pusher.start()
            settle(clock, stub)
            assert len(receiver.received) == 1
            assert pending(store) == {"m0": (1, 1.0)}   # first delay is backoff_initial_s
            clock.advance(0.999)
            settle(clock, stub)
            assert len(receiver.received) == 1
            clock.advance(0.001)
            settle(clock, stub)
        assert [r.at for r in receiver.received] == [0.0, 1.0]
        assert counts(store) == {"report:acked": 1}
        assert pusher.stats == PushStats(pushed=1, failed=1, dead=0, in_flight=0, pending=0)
        [failed] = [e for e in logs if e["event"] == "push.failed"]
        assert failed["log_level"] == "info"
        assert failed["host"] == "receiver.test" and failed["status"] == 500
        assert failed["attempt"] == 1 and failed["next_delay_s"] == 1.0

    def test_redirect_is_a_failure_and_not_followed(self, clock: Clock, store: Store) -> None:
        """A 302 counts as a failed attempt; its Location is never requested."""
        receiver = Receiver(clock, 302)
        queue(store, clock, 1)
        pusher, stub = make(store, clock, receiver)
        pusher.start()
        settle(clock, stub)
        assert [r.path for r in receiver.received] == ["/cb"]
        assert pending(store)["m0"][0] == 1
        assert pusher.stats.failed == 1
        clock.advance(1.0)
        settle(clock, stub)
        assert [r.path for r in receiver.received] == ["/cb", "/cb"]
        assert counts(store) == {"report:acked": 1}

    def test_timeout_then_retry(self, clock: Clock, store: Store) -> None:
        """A receiver that never answers is cut off at timeout_s and retried."""
        receiver = Receiver(clock, HOLD, 200)
        queue(store, clock, 1)
        pusher, stub = make(store, clock, receiver)
        with capture_logs() as logs:
            pusher.start()
            settle(clock, stub)
            assert pusher.stats.in_flight == 1
            clock.advance(9.9)
            settle(clock, stub)
            assert pusher.stats.in_flight == 1 and counts(store) == {"report:pending": 1}
            clock.advance(0.1)
            settle(clock, stub)
        assert receiver.aborted == 1               # the connection was closed, not leaked
        assert pending(store) == {"m0": (1, 11.0)}
        [failed] = [e for e in logs if e["event"] == "push.failed"]
        assert "timeout" in failed["error"]
        clock.advance(1.0)
        settle(clock, stub)
        assert len(receiver.received) == 2
        assert counts(store) == {"report:acked": 1}

    def test_each_push_times_out_at_its_own_deadline(self, clock: Clock, store: Store) -> None:
        """One timer serves every push in flight; a push is cut off timeout_s after its own start."""
        receiver = Receiver(clock, HOLD, HOLD)
        queue(store, clock, 1)
        pusher, stub = make(store, clock, receiver)
        pusher.start()
        settle(clock, stub)
        clock.advance(4.0)
        queue(store, clock, 1, prefix="n")
        pusher.wake()
        settle(clock, stub)
        assert pusher.stats.in_flight == 2
        assert len([c for c in clock.getDelayedCalls() if c.func == pusher._deadlines_due]) == 1
        clock.advance(6.0)                         # the first push's 10 s are up
        settle(clock, stub)
        assert receiver.aborted == 1 and pusher.stats.in_flight == 1
        clock.advance(3.9)
        settle(clock, stub)
        assert receiver.aborted == 1               # the second has 0.1 s left
        clock.advance(0.1)
        settle(clock, stub)
        assert receiver.aborted == 2 and pusher.stats.in_flight == 0

    def test_2xx_with_stalled_body_is_acknowledged(self, clock: Clock, store: Store) -> None:
        """The status line decides: a 2xx whose body stalls past the timeout is still an ack."""
        receiver = Receiver(clock, HOLD)
        queue(store, clock, 1)
        pusher, stub = make(store, clock, receiver)
        pusher.start()
        settle(clock, stub)
        [request] = receiver.held
        request.setResponseCode(200)
        request.write(b"partial body")
        settle(clock, stub)
        assert counts(store) == {"report:pending": 1}
        clock.advance(10.0)
        settle(clock, stub)
        assert receiver.aborted == 1
        assert counts(store) == {"report:acked": 1}
        assert pusher.stats.pushed == 1 and pusher.stats.failed == 0

    @pytest.mark.parametrize(("exc", "name"), [
        (ConnectionRefusedError(), "ConnectionRefusedError"),
        (DNSLookupError("receiver.test"), "DNSLookupError"),
    ])
    def test_transport_errors_retry(self, clock: Clock, store: Store, exc: Exception,
                                    name: str) -> None:
        """Refused connections and DNS failures are failed attempts with the error named."""
        agent, records = agent_spy()
        pusher = Pusher(store, CFG, reactor=clock, http_client=HTTPClient(agent),
                        rng=random.Random(1))
        queue(store, clock, 1)
        with capture_logs() as logs:
            pusher.start()
            settle(clock)
            [record] = records
            assert record.method == b"POST" and record.uri == URL.encode()
            record.deferred.errback(exc)
            settle(clock)
        [failed] = [e for e in logs if e["event"] == "push.failed"]
        assert name in failed["error"] and failed["status"] is None
        assert pending(store)["m0"][0] == 1

    def test_backoff_grows_to_the_cap(self, clock: Clock, store: Store) -> None:
        """Successive failures wait longer, never beyond backoff_max_s."""
        cfg = CallbackConfig(timeout_s=10.0, max_age_s=10_000.0, backoff_initial_s=1.0,
                             backoff_max_s=8.0, concurrency=1)
        receiver = Receiver(clock, *[503] * 12)
        queue(store, clock, 1)
        pusher, stub = make(store, clock, receiver, cfg)
        pusher.start()
        settle(clock, stub)
        delays = []
        for _ in range(10):
            _, next_at = pending(store)["m0"]
            delays.append(next_at - clock.seconds())
            clock.advance(next_at - clock.seconds())
            settle(clock, stub)
        assert delays[0] == 1.0
        caps = [min(8.0, 2.0 ** n) for n in range(10)]
        assert all(1.0 <= d <= cap for d, cap in zip(delays, caps, strict=True))
        assert max(delays) > 2.0
        assert len(receiver.received) == 11


class TestDeadLetter:
    def test_max_age(self, clock: Clock, store: Store) -> None:
        """Past max_age_s since queueing, the row is dead: logged, counted, not pushed again."""
        cfg = CallbackConfig(timeout_s=10.0, max_age_s=5.0, backoff_initial_s=1.0,
                             backoff_max_s=2.0, concurrency=4)
        receiver = Receiver(clock, *[500] * 100)
        queue(store, clock, 1)
        pusher, stub = make(store, clock, receiver, cfg)
        with capture_logs() as logs:
            pusher.start()
            settle(clock, stub)
            for _ in range(20):
                clock.advance(0.5)
                settle(clock, stub)
        times = [r.at for r in receiver.received]
        assert times[0] == 0.0 and times[-1] == 5.0        # a last try at the deadline
        assert all(b - a <= 2.0 for a, b in zip(times, times[1:], strict=False))
        assert counts(store) == {"report:dead": 1}
        [dead] = dead_pushes(store)
        assert dead.ref_id == "m0" and dead.last_error == "HTTP 500"
        assert dead.attempts == len(times)
        assert pusher.stats.dead == 1 and pusher.stats.failed == len(times) - 1
        [event] = [e for e in logs if e["event"] == "push.dead"]
        assert event["log_level"] == "warning" and event["host"] == "receiver.test"
        assert result_of(store.outbox.next_due_at()) is None
        assert clock.getDelayedCalls() == []               # nothing left to wait for

    def test_url_refused_by_policy_is_dead_without_a_request(self, clock: Clock,
                                                            store: Store) -> None:
        """A row whose host is not (or no longer) allowed is dead-lettered, never POSTed."""
        cfg = CallbackConfig(allowed_hosts=frozenset({"good.test"}))
        receiver = Receiver(clock)
        queue_one(store, "report", "bad", "http://bad.test/cb", payload("bad"), 0.0)
        queue_one(store, "report", "good", "http://good.test/cb", payload("good"), 0.0)
        pusher, stub = make(store, clock, receiver, cfg)
        pusher.start()
        settle(clock, stub)
        assert [r.ref for r in receiver.received] == ["good"]
        assert counts(store) == {"report:acked": 1, "report:dead": 1}
        [dead] = dead_pushes(store)
        assert dead.ref_id == "bad" and dead.last_error is not None and "url policy" in dead.last_error


class TestBounds:
    def test_concurrency_bound(self, clock: Clock, store: Store) -> None:
        """Never more than `concurrency` pushes outstanding; the backlog still drains."""
        cfg = CallbackConfig(concurrency=3)
        receiver = Receiver(clock, *[HOLD] * 10)
        refs = queue(store, clock, 10)
        pusher, stub = make(store, clock, receiver, cfg)
        pusher.start()
        settle(clock, stub)
        assert receiver.open == 3 and pusher.stats.in_flight == 3
        assert pusher.stats.pending <= 2 * 3 + 3           # one page fetched, not all ten
        while receiver.held:
            receiver.release(200)
            settle(clock, stub)
            assert receiver.open <= 3
        assert receiver.peak == 3
        assert sorted(receiver.refs()) == sorted(refs)
        assert counts(store) == {"report:acked": 10}

    def test_no_busy_loop_when_idle(self, clock: Clock, store: Store) -> None:
        """With nothing queued there is no timer; wake() pushes newly queued rows."""
        receiver = Receiver(clock, 500)
        pusher, stub = make(store, clock, receiver)
        pusher.start()
        settle(clock, stub)
        assert clock.getDelayedCalls() == []
        queue(store, clock, 1)
        pusher.wake()
        settle(clock, stub)
        assert len(receiver.received) == 1
        [timer] = clock.getDelayedCalls()              # exactly one timer: the retry
        assert timer.getTime() == 1.0
        clock.advance(1.0)
        settle(clock, stub)
        assert counts(store) == {"report:acked": 1}
        assert clock.getDelayedCalls() == []

    def test_wake_coalesces(self, clock: Clock, store: Store) -> None:
        """Many wake() calls in one tick cost one pump."""
        receiver = Receiver(clock)
        pusher, stub = make(store, clock, receiver)
        pusher.start()
        settle(clock, stub)
        queue(store, clock, 5)
        for _ in range(50):
            pusher.wake()
        assert [c.func.__name__ for c in clock.getDelayedCalls() if c.func.__self__ is pusher] == ["_pump"]
        settle(clock, stub)
        assert counts(store) == {"report:acked": 5}

    def test_not_pushed_before_commit(self, clock: Clock, group_commit_store: Store) -> None:
        """SQLite: a row is pushed only once the transaction that queued it is committed."""
        store = group_commit_store
        receiver = Receiver(clock)
        pusher, stub = make(store, clock, receiver)
        pusher.start()
        settle(clock, stub)
        queue(store, clock, 1)
        commits = store.commits
        pusher.wake()
        settle(clock, stub)
        assert receiver.received == [] and store.commits == commits
        clock.advance(0.005)
        settle(clock, stub)
        assert len(receiver.received) == 1


class TestOffer:
    """Rows this process queued reach the pusher from memory once committed (no store fetch)."""

    @staticmethod
    def offer_new(store: Store, clock: Clock, pusher: Pusher, n: int, prefix: str = "o") -> list[str]:
        refs = queue(store, clock, n, prefix=prefix)
        for item in result_of(store.outbox.due(float("inf"), 10_000)):
            if item.ref_id in refs:
                pusher.offer(item)
        return refs

    def test_offered_row_is_pushed_without_a_wake(self, clock: Clock, store: Store) -> None:
        receiver = Receiver(clock)
        pusher, stub = make(store, clock, receiver)
        pusher.start()
        settle(clock, stub)
        refs = self.offer_new(store, clock, pusher, 2)
        settle(clock, stub)
        assert sorted(receiver.refs()) == refs
        assert counts(store) == {"report:acked": 2}

    def test_offered_row_waits_for_its_commit(self, clock: Clock, group_commit_store: Store) -> None:
        """SQLite: an offer is pushed only after the commit that queued it."""
        store = group_commit_store
        receiver = Receiver(clock)
        pusher, stub = make(store, clock, receiver)
        pusher.start()
        settle(clock, stub)
        self.offer_new(store, clock, pusher, 1)
        settle(clock, stub)
        assert receiver.received == []
        clock.advance(0.005)
        settle(clock, stub)
        assert len(receiver.received) == 1

    def test_offered_and_fetched_rows_are_pushed_once(self, clock: Clock, store: Store) -> None:
        receiver = Receiver(clock)
        pusher, stub = make(store, clock, receiver)
        pusher.start()
        settle(clock, stub)
        refs = self.offer_new(store, clock, pusher, 6)
        pusher.wake()                      # a fetch in the same tick must not take them too
        for _ in range(5):
            settle(clock, stub)
        assert sorted(receiver.refs()) == refs and set(receiver.refs().values()) == {1}

    def test_a_row_offered_while_a_fetch_reads_it_is_pushed_once(self, clock: Clock, store: Store) -> None:
        """The offer arrives while a fetch is reading the store (after it chose what to exclude):
        the fetch pushes the row, and the offer, taken with that push's acknowledgement, does not."""
        receiver = Receiver(clock)
        pusher, stub = make(store, clock, receiver)
        pusher.start()
        settle(clock, stub)
        [ref] = queue(store, clock, 1)
        fetch = store.outbox.due

        def due_then_offer(now: float, limit: int, exclude: Any = ()) -> Any:
            return fetch(now, limit, exclude).addCallback(offer_fetched)

        def offer_fetched(items: list[Any]) -> list[Any]:
            for item in items:
                pusher.offer(item)
            store.outbox.due = fetch          # type: ignore[method-assign]  (once)
            return items
        store.outbox.due = due_then_offer     # type: ignore[method-assign]
        pusher.wake()
        for _ in range(5):
            settle(clock, stub)
        assert receiver.refs() == {ref: 1}

    def test_rows_left_behind_by_a_full_lane_drain_without_waiting_for_a_timer(
            self, clock: Clock, store: Store) -> None:
        """A fast receiver's overflow stays in the store and is fetched as its lane runs low."""
        cfg = CallbackConfig(concurrency=2, receiver_concurrency=2, backoff_initial_s=30.0)
        receiver = Receiver(clock)
        pusher, stub = make(store, clock, receiver, cfg)
        pusher.start()
        self.offer_new(store, clock, pusher, 1, prefix="first")   # learns the receiver's latency
        settle(clock, stub)
        refs = self.offer_new(store, clock, pusher, 40)            # far more than the lane holds
        for _ in range(40):
            settle(clock, stub)                                    # no clock time passes
        assert sorted(r for r in receiver.refs() if r.startswith("o")) == sorted(refs)
        assert counts(store) == {"report:acked": 41}


class TestLifecycle:
    def test_restart_pushes_pending(self, clock: Clock, opener: Opener) -> None:
        """A new Pusher on the same store pushes what the old run left pending."""
        store = opener.open()
        queue(store, clock, 2)                        # m0 fails, m1 is in flight at the crash
        first = Receiver(clock, 500, HOLD)
        pusher, stub = make(store, clock, first, CallbackConfig(concurrency=1))
        pusher.start()
        settle(clock, stub)
        assert [r.ref for r in first.received] == ["m0", "m1"]
        opener.close(store)                           # the process dies here

        store = opener.open()
        assert pending(store) == {"m0": (1, 1.0), "m1": (0, 0.0)}
        second = Receiver(clock)
        pusher, stub = make(store, clock, second)
        pusher.start()
        settle(clock, stub)
        assert [r.ref for r in second.received] == ["m1"]   # m0 waits for its backoff
        clock.advance(1.0)
        settle(clock, stub)
        assert [r.ref for r in second.received] == ["m1", "m0"]
        assert counts(store) == {"report:acked": 2}

    def test_stop_waits_for_in_flight(self, clock: Clock, store: Store) -> None:
        """stop() takes no new work and fires once in-flight pushes are recorded."""
        receiver = Receiver(clock, HOLD, HOLD)
        queue(store, clock, 3)
        pusher, stub = make(store, clock, receiver, CallbackConfig(concurrency=2))
        pusher.start()
        settle(clock, stub)
        d = pusher.stop()
        settle(clock, stub)
        assert not d.called
        receiver.release(200)
        receiver.release(500)
        settle(clock, stub)
        assert d.called
        assert len(receiver.received) == 2              # the third was never started
        assert counts(store) == {"report:acked": 1, "report:pending": 2}
        assert pending(store)["m1"][0] == 1

    def test_stop_bound_abandons_without_counting(self, clock: Clock, store: Store) -> None:
        """After the grace period in-flight pushes are cancelled and stay due, uncounted."""
        receiver = Receiver(clock, HOLD)
        queue(store, clock, 1)
        pusher, stub = make(store, clock, receiver)
        pusher.start()
        settle(clock, stub)
        d = pusher.stop(grace_s=2.0)
        clock.advance(1.9)
        settle(clock, stub)
        assert not d.called
        clock.advance(0.1)
        settle(clock, stub)
        assert d.called
        assert pending(store) == {"m0": (0, 0.0)}
        assert pusher.stats == PushStats(pushed=0, failed=0, dead=0, in_flight=0, pending=0)
        assert clock.getDelayedCalls() == []

    def test_logs_carry_no_payload(self, clock: Clock, store: Store) -> None:
        """Push logs name the host, never the payload, the number or the URL's query."""
        cfg = CallbackConfig(max_age_s=2.0, backoff_initial_s=1.0, backoff_max_s=1.0)
        receiver = Receiver(clock, 500, 500, 500, 500, 500, 200)
        queue_one(store, "report", "m0", "http://receiver.test/cb?token=s3cret", payload("m0"), 0.0)
        queue_one(store, "report", "m1", "http://receiver.test/cb?token=s3cret", payload("m1"), 0.0)
        pusher, stub = make(store, clock, receiver, cfg)
        with capture_logs() as logs:
            pusher.start()
            for _ in range(5):
                settle(clock, stub)
                clock.advance(1.0)
        events = {e["event"] for e in logs}
        assert {"push.failed", "push.dead"} <= events
        text = repr(logs)
        assert "13812345678" not in text and "DELIVRD" not in text and "s3cret" not in text


class TestBackoffDelay:
    @given(attempts=st.integers(0, 10_000), initial=st.floats(0.001, 100.0),
           ceiling=st.floats(0.001, 10_000.0), seed=st.integers(0, 2**32))
    def test_bounds(self, attempts: int, initial: float, ceiling: float, seed: int) -> None:
        """The delay lies within [initial, min(max, initial * 2**attempts)] (or max if lower)."""
        delay = backoff_delay(attempts, initial, ceiling, random.Random(seed))
        cap = min(ceiling, initial * 2.0 ** min(attempts, 62))
        assert min(initial, ceiling) <= delay <= max(cap, min(initial, ceiling))

    def test_jitter_spreads(self) -> None:
        """Full jitter: the same attempt number gives different delays."""
        rng = random.Random(7)
        delays = {round(backoff_delay(6, 1.0, 300.0, rng), 6) for _ in range(50)}
        assert len(delays) > 40 and max(delays) > 32.0 and min(delays) < 32.0


# -- real reactor -----------------------------------------------------------------------

LIVE_PUSHES = 12
LIVE_CONCURRENCY = 4


def test_live_receiver_down_then_up(tmp_path: Path) -> None:
    """Real reactor, real sockets: pushes to a closed port open the receiver's circuit (only
    a few real attempts, not one per row), probes find it listening again, then every push
    arrives exactly once and is acknowledged over kept-alive connections.
    """
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-m", "tests.unit.test_outbox", "live",
                           str(tmp_path / "live.db")],
                          cwd=repo, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert 1 <= result["refused_first"] <= LIVE_CONCURRENCY
    assert result["held_while_down"] >= LIVE_PUSHES - LIVE_CONCURRENCY
    assert result["received"] == {f"m{i}": 1 for i in range(LIVE_PUSHES)}
    assert result["acked"] == LIVE_PUSHES and result["pending"] == 0
    assert 1 <= result["connections"] <= LIVE_CONCURRENCY


def _live(reactor: Any, db_path: str) -> Any:
    """Run by the subprocess: queue pushes, receiver down, wait, receiver up, wait."""
    from twisted.internet.defer import ensureDeferred
    from twisted.web.server import Site

    async def wait_for(condition: Any, deadline_s: float, what: str) -> None:
        from twisted.internet.task import deferLater

        end = reactor.seconds() + deadline_s
        while not condition():
            if reactor.seconds() > end:
                raise TimeoutError(f"gave up waiting for {what}")
            await deferLater(reactor, 0.01, lambda: None)

    class Live(Resource):
        isLeaf = True

        def __init__(self) -> None:
            super().__init__()
            self.refs: Counter[str] = Counter()
            self.peers: set[int] = set()

        def render_POST(self, request: Request) -> bytes:
            assert request.content is not None
            self.refs[json.loads(request.content.read())["smsMsgId"]] += 1
            self.peers.add(request.getClientAddress().port)
            return b"ok"

    async def main() -> None:
        receiver = Live()
        site = Site(receiver)
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        number = port.getHost().port
        await port.stopListening()                      # the receiver is down

        store = open_store(StoreConfig(path=Path(db_path), commit_interval_ms=5), reactor=reactor)
        cfg = CallbackConfig(timeout_s=5.0, max_age_s=120.0, backoff_initial_s=0.05,
                             backoff_max_s=0.2, concurrency=LIVE_CONCURRENCY,
                             allow_private=frozenset({f"127.0.0.1:{number}"}))
        url = f"http://127.0.0.1:{number}/cb"
        for i in range(LIVE_PUSHES):
            queue_one(store, "report", f"m{i}", url, payload(f"m{i}"), reactor.seconds())
        await store.durable()
        pusher = Pusher(store, cfg, reactor=reactor)
        pusher.start()
        pusher.wake()

        await wait_for(lambda: pusher.stats.open_circuits == 1, 30.0, "the receiver's circuit to open")
        rows = await store.outbox.due(float("inf"), 1000)
        refused_first = sum(1 for r in rows if r.attempts >= 1)
        held_while_down = sum(1 for r in rows if r.attempts == 0)
        port = reactor.listenTCP(number, site, interface="127.0.0.1")   # the receiver is up
        await wait_for(lambda: pusher.stats.pushed >= LIVE_PUSHES, 30.0, "every push acked")
        await pusher.stop()
        await store.durable()
        await store.close()
        await port.stopListening()

        reopened = open_store(StoreConfig(path=Path(db_path)), inline=True)
        outbox = counts(reopened)
        await reopened.close()
        print(json.dumps({
            "refused_first": refused_first,
            "held_while_down": held_while_down,
            "received": dict(receiver.refs),
            "acked": outbox.get("report:acked", 0),
            "pending": outbox.get("report:pending", 0),
            "connections": len(receiver.peers),
        }))

    return ensureDeferred(main())


if __name__ == "__main__" and sys.argv[1:2] == ["live"]:
    from twisted.internet.task import react

    react(_live, (sys.argv[2],))
