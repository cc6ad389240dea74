"""The push outbox: delivers status reports and MO uplinks to customers' HTTP URLs.

Rows are queued in the store's ``outbox`` table by the pipeline, in the same
transaction as the state change they report. The :class:`Pusher` POSTs each row's
payload verbatim; any 2xx acknowledges it, anything else (other status, 3xx included
since redirects are never followed, refused connection, DNS failure, timeout) is
retried with exponential backoff and full jitter, the next attempt time written to the
store, until ``max_age_s`` after the row was queued; then the row is dead-lettered.
Delivery is at least once: a crash between a receiver's 2xx and our commit pushes the
row again after restart, and receivers dedupe by ``smsMsgId``.

Throughput: one persistent ``HTTPConnectionPool`` (keep-alive), at most
``concurrency`` pushes in flight, due rows fetched a page at a time, results applied
in batches so one group commit covers many acknowledgements. When nothing is due,
one timer waits for the earliest ``next_attempt_at``; :meth:`Pusher.wake` cuts it short.
"""

from __future__ import annotations

import functools
import random
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import structlog
from twisted.internet.defer import CancelledError, Deferred, maybeDeferred, succeed
from twisted.internet.protocol import Protocol as _WireProtocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseFailed, ResponseNeverReceived
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer, IResponse
from zope.interface import implementer

from bridge.config import CallbackConfig
from bridge.latency import LATENCY
from bridge.models import OutboxItem
from bridge.store import Store
from bridge.urlpolicy import check_push_url

__all__ = ["PushStats", "Pusher", "backoff_delay"]

log = structlog.get_logger("outbox")

_HEADERS = {
    "Content-Type": ["application/json; charset=utf-8"],
    "User-Agent": ["smpp-bridge"],
}
# Idle connections are dropped a little before common server keep-alive limits
# (twisted.web: 60 s), so a push rarely lands on a connection the server is closing.
_IDLE_CONNECTION_S = 50.0
_STOP_GRACE_S = 5.0
_ERROR_CHARS = 200


class _HTTPClient(Protocol):
    """What the pusher needs of treq: ``HTTPClient`` and ``StubTreq`` both fit."""

    def request(self, method: str, url: str, **kwargs: Any) -> Deferred[Any]: ...


@implementer(IBodyProducer)
class _Body:
    """A fixed JSON body, written at once (FileBodyProducer would schedule a cooperator task)."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.length = len(data)

    def startProducing(self, consumer: Any) -> Deferred[None]:  # noqa: N802 (Twisted API)
        consumer.write(self._data)
        return succeed(None)

    def pauseProducing(self) -> None:  # noqa: N802 (Twisted API)
        pass

    def resumeProducing(self) -> None:  # noqa: N802 (Twisted API)
        pass

    def stopProducing(self) -> None:  # noqa: N802 (Twisted API)
        pass


class _AgentClient:
    """The treq ``request`` call shape over a bare Agent.

    Profiling showed treq's per-request stack (cookie agent, content decoder, URL
    rebuilding) costing about a tenth of the daemon's CPU at 1,000 pushes/s. Pushes need
    none of it: no cookies, no redirects, no compressed answers; the body is discarded.
    """

    def __init__(self, agent: Any) -> None:
        self._agent = agent
        self._headers = Headers({k.encode(): [v.encode() for v in vs] for k, vs in _HEADERS.items()})

    def request(self, method: str, url: str, *, data: bytes, **_ignored: Any) -> Deferred[Any]:
        return self._agent.request(method.encode(), url.encode("utf-8"), self._headers, _Body(data))


@dataclass(frozen=True, slots=True)
class PushStats:
    """A snapshot for /metrics; counters are since this pusher started.

    ``pending`` is the due work the pusher holds (in flight plus the fetched page), a
    lower bound of the backlog: counting every pending row would need a table scan.
    """

    pushed: int
    failed: int
    dead: int
    in_flight: int
    pending: int


@dataclass(slots=True)
class _Push:
    """One attempt in flight (mutable, private to this module)."""

    item: OutboxItem
    host: str
    started: float
    deferred: Deferred[Any] | None = None
    timer: Any = None
    code: int | None = None
    timed_out: bool = False
    abandoned: bool = False
    finished: bool = False


@dataclass(frozen=True, slots=True)
class _Outcome:
    push: _Push
    code: int | None
    error: str | None      # None: acknowledged
    abandoned: bool = False


@dataclass(slots=True)
class _StopState:
    done: Deferred[None]
    timer: Any = None
    finishing: bool = False


def backoff_delay(attempts_before: int, initial_s: float, max_s: float, rng: random.Random) -> float:
    """Seconds before the next attempt: full jitter in [initial, min(max, initial * 2**n)].

    The floor at ``initial_s`` keeps a jittered retry from hammering a receiver that
    just failed; ``n`` is the number of attempts made before the one that failed.
    """
    cap = min(max_s, initial_s * 2.0 ** min(attempts_before, 62))
    return rng.uniform(initial_s, cap) if cap > initial_s else min(initial_s, max_s)


class _Discard(_WireProtocol):
    """Reads a response body to its end and drops it, so the connection can be reused.

    Cancelling ``done`` (the push timed out) closes the connection, instead of leaving
    a slow body streaming into a pooled connection.
    """

    def __init__(self) -> None:
        self.done: Deferred[None] = Deferred(self._cancel)

    def _cancel(self, _d: Deferred[None]) -> None:
        if self.transport is not None:
            self.transport.stopProducing()

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self.done.called:
            return
        if reason is None or reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(None)
        else:
            self.done.errback(reason)


class Pusher:
    """Pushes due outbox rows; the only writer of push outcomes to the store.

    ``reactor`` provides ``callLater``/``seconds`` (a ``task.Clock`` in tests) and, when
    no ``http_client`` is given, TCP/TLS for the default treq client with its pool.
    """

    def __init__(self, store: Store, config: CallbackConfig, *, reactor: Any,
                 http_client: _HTTPClient | None = None, rng: random.Random | None = None) -> None:
        self._store = store
        self._cfg = config
        self._reactor = reactor
        self._rng = rng or random.Random()
        self._pool: Any = None
        self._client = http_client if http_client is not None else self._default_client()
        self._page = max(1, 2 * config.concurrency)
        self._inflight: dict[int, _Push] = {}
        self._ready: deque[OutboxItem] = deque()
        self._outcomes: list[_Outcome] = []
        self._pump_call: Any = None
        self._idle_timer: Any = None
        self._committing = False
        self._again = False
        self._running = False
        self._stop: _StopState | None = None
        self._pushed = 0
        self._failed = 0
        self._dead = 0

    def _default_client(self) -> _HTTPClient:
        from twisted.web.client import Agent, HTTPConnectionPool

        pool = HTTPConnectionPool(self._reactor, persistent=True)
        pool.maxPersistentPerHost = self._cfg.concurrency
        pool.cachedConnectionTimeout = _IDLE_CONNECTION_S
        self._pool = pool
        return _AgentClient(Agent(self._reactor, connectTimeout=self._cfg.timeout_s, pool=pool))

    # -- public API ---------------------------------------------------------------

    @property
    def stats(self) -> PushStats:
        return PushStats(pushed=self._pushed, failed=self._failed, dead=self._dead,
                         in_flight=len(self._inflight),
                         pending=len(self._inflight) + len(self._ready))

    def start(self) -> None:
        """Begin pushing: rows left pending by a previous run are due again now."""
        if self._running or self._stop is not None:
            return
        self._running = True
        self._schedule_pump()

    def wake(self) -> None:
        """New rows were queued and committed: look for due rows now, not at the timer."""
        if self._running:
            self._schedule_pump()

    def stop(self, grace_s: float | None = None) -> Deferred[None]:
        """Take no new work; wait up to ``grace_s`` for pushes in flight, then cancel them.

        A cancelled push is not recorded as an attempt: its row stays due and is pushed
        again by the next run. Fires after the outcomes are committed.
        """
        if self._stop is not None:
            return _follow(self._stop.done)
        self._running = False
        self._stop = _StopState(done=Deferred())
        self._cancel_idle_timer()
        self._ready.clear()
        grace = min(self._cfg.timeout_s, _STOP_GRACE_S) if grace_s is None else grace_s
        if self._inflight:
            self._stop.timer = self._reactor.callLater(grace, self._abandon_inflight)
        self._schedule_pump()
        return _follow(self._stop.done)

    # -- the pump: apply outcomes, commit, fetch due rows, launch -----------------

    def _schedule_pump(self) -> None:
        if self._stop is not None and self._stop.finishing:
            return  # stopped: the store may already be closed
        if self._committing:
            self._again = True
        elif self._pump_call is None:
            self._pump_call = self._reactor.callLater(0, self._pump)

    def _pump(self) -> None:
        self._pump_call = None
        if self._stop is not None and self._stop.finishing:
            return
        self._committing = True
        d = maybeDeferred(self._apply_outcomes, self._reactor.seconds())
        # Waiting for the commit makes our acks durable in one group commit, and means
        # rows are only pushed once the transaction that queued them is committed.
        d.addCallback(lambda _: self._store.durable())
        d.addCallback(lambda _: Deferred.fromCoroutine(self._after_commit()))
        d.addErrback(self._pump_failed)

    async def _after_commit(self) -> None:
        # Still "committing" while due rows are read: one pump at a time.
        if self._running:
            now = self._reactor.seconds()
            await self._fill(now)
            await self._arm_idle_timer(now)
        self._committing = False
        again, self._again = self._again, False
        if not self._running and self._stop is not None and not self._inflight and not self._outcomes:
            self._finish_stop()
        if again or self._outcomes:
            self._schedule_pump()

    def _pump_failed(self, failure: Failure) -> None:
        # E.g. a failed group commit (StoreError): it was rolled back, so acknowledged
        # rows are pending again in the store and get pushed again (at least once).
        self._committing = False
        self._again = False
        log.error("push.pump_failed", error_type=failure.type.__name__,
                  error=failure.getErrorMessage()[:_ERROR_CHARS])
        if self._stop is not None:
            self._finish_stop()
        elif self._running:
            self._cancel_idle_timer()
            self._idle_timer = self._reactor.callLater(self._cfg.backoff_initial_s,
                                                       self._idle_timer_fired)

    async def _fill(self, now: float) -> None:
        exhausted = False
        while len(self._inflight) < self._cfg.concurrency:
            if not self._ready:
                if exhausted:
                    break
                page = await self._store.outbox.due(now, self._page, exclude=tuple(self._inflight))
                exhausted = len(page) < self._page
                if not page:
                    break
                self._ready.extend(page)
            self._launch(self._ready.popleft(), now)

    async def _arm_idle_timer(self, now: float) -> None:
        self._cancel_idle_timer()
        if len(self._inflight) >= self._cfg.concurrency:
            return  # a completion pumps again
        nxt = await self._store.outbox.next_due_at()
        if nxt is None:
            return
        if nxt <= now:
            if self._inflight:
                return  # the due row is one in flight; its completion pumps again
            nxt = now + self._cfg.backoff_initial_s  # defensive: never spin
        self._idle_timer = self._reactor.callLater(nxt - now, self._idle_timer_fired)

    def _idle_timer_fired(self) -> None:
        self._idle_timer = None
        self._schedule_pump()

    def _cancel_idle_timer(self) -> None:
        if self._idle_timer is not None and self._idle_timer.active():
            self._idle_timer.cancel()
        self._idle_timer = None

    # -- one push -----------------------------------------------------------------

    def _launch(self, item: OutboxItem, now: float) -> None:
        host = _host_of(item.url)
        problem = _url_problem(item.url, self._cfg.allowed_hosts)
        if problem is not None:
            # Retrying cannot make a refused URL acceptable; an operator who widens the
            # allow-list can requeue dead rows.
            self._store.outbox.mark_dead(item, f"url policy: {problem}")
            self._dead += 1
            self._schedule_pump()  # the next pump commits this
            log.warning("push.dead", outbox_id=item.id, kind=item.kind, ref_id=item.ref_id,
                        host=host, error=f"url policy: {problem}", attempt=item.attempts + 1)
            return
        push = _Push(item=item, host=host, started=now)
        self._inflight[item.id] = push
        d = maybeDeferred(self._client.request, "POST", item.url,
                          data=item.payload.encode("utf-8"), headers=_HEADERS,
                          allow_redirects=False, unbuffered=True, reactor=self._reactor)
        push.deferred = d
        push.timer = self._reactor.callLater(self._cfg.timeout_s, self._time_out, push)
        d.addCallback(self._got_response, push)
        d.addCallbacks(self._succeeded, self._errored, callbackArgs=(push,), errbackArgs=(push,))

    def _got_response(self, response: IResponse, push: _Push) -> Deferred[None]:
        push.code = response.code
        if response.length == 0:
            return succeed(None)
        body = _Discard()
        response.deliverBody(body)
        return body.done

    def _time_out(self, push: _Push) -> None:
        push.timer = None
        push.timed_out = True
        if push.deferred is not None:
            push.deferred.cancel()

    def _abandon_inflight(self) -> None:
        if self._stop is not None:
            self._stop.timer = None
        for push in list(self._inflight.values()):
            # (``deferred.called`` is already true while it waits on the body.)
            if push.deferred is not None and not push.finished:
                push.abandoned = True
                push.deferred.cancel()

    def _succeeded(self, _: object, push: _Push) -> None:
        self._finish(push, None)

    def _errored(self, failure: Failure, push: _Push) -> None:
        self._finish(push, failure)

    def _finish(self, push: _Push, failure: Failure | None) -> None:
        push.finished = True
        if push.timer is not None and push.timer.active():
            push.timer.cancel()
        push.timer = None
        if push.code is not None:
            # The receiver answered; a body that then broke off does not change it.
            ok = 200 <= push.code < 300
            error = None if ok else _describe_status(push.code)
            self._outcomes.append(_Outcome(push, push.code, error))
        elif push.abandoned:
            self._outcomes.append(_Outcome(push, None, "cancelled at shutdown", abandoned=True))
        elif push.timed_out:
            self._outcomes.append(_Outcome(push, None, f"timeout after {self._cfg.timeout_s:g}s"))
        else:
            assert failure is not None
            self._outcomes.append(_Outcome(push, None, _describe_failure(failure)))
        self._schedule_pump()

    # -- recording outcomes -------------------------------------------------------

    def _apply_outcomes(self, now: float) -> None:
        outcomes, self._outcomes = self._outcomes, []
        # Free the slots first: if a store write below fails, the rows are still pending
        # in the store and the next fetch finds them again.
        for out in outcomes:
            self._inflight.pop(out.push.item.id, None)
        for out in outcomes:
            item = out.push.item
            if out.abandoned:
                continue
            attempt = item.attempts + 1
            if out.error is None:
                self._store.outbox.mark_pushed(item, now)
                LATENCY.push_acked(item.kind, item.created_at, now)
                self._pushed += 1
                log.debug("push.acked", outbox_id=item.id, kind=item.kind, ref_id=item.ref_id,
                          host=out.push.host, status=out.code, attempt=attempt,
                          elapsed_s=round(now - out.push.started, 3))
                continue
            deadline = item.created_at + self._cfg.max_age_s
            if now >= deadline:
                self._store.outbox.mark_dead(item, out.error)
                self._dead += 1
                log.warning("push.dead", outbox_id=item.id, kind=item.kind, ref_id=item.ref_id,
                            host=out.push.host, status=out.code, error=out.error, attempt=attempt,
                            age_s=round(now - item.created_at, 3))
                continue
            delay = backoff_delay(item.attempts, self._cfg.backoff_initial_s,
                                  self._cfg.backoff_max_s, self._rng)
            next_at = min(now + delay, deadline)  # one last try at the deadline
            self._store.outbox.mark_failed(item, next_at, out.error)
            self._failed += 1
            log.info("push.failed", outbox_id=item.id, kind=item.kind, ref_id=item.ref_id,
                     host=out.push.host, status=out.code, error=out.error, attempt=attempt,
                     next_delay_s=round(next_at - now, 3))

    def _finish_stop(self) -> None:
        stop = self._stop
        if stop is None or stop.finishing:
            return
        stop.finishing = True
        self._cancel_idle_timer()
        if self._pump_call is not None and self._pump_call.active():
            self._pump_call.cancel()
        self._pump_call = None
        if stop.timer is not None and stop.timer.active():
            stop.timer.cancel()
        stop.timer = None
        d: Deferred[Any] = succeed(None)
        if self._pool is not None:
            d.addCallback(lambda _: self._pool.closeCachedConnections())
        d.addBoth(lambda _: stop.done.callback(None))


def _follow(d: Deferred[None]) -> Deferred[None]:
    """A new Deferred firing with ``d``, so several callers can wait on one stop."""
    out: Deferred[None] = Deferred()

    def fire(result: object) -> object:
        out.callback(None)
        return result

    d.addBoth(fire)
    return out


# Most pushes go to a handful of URLs: check each once, not once per push.
_url_problem = functools.lru_cache(maxsize=4096)(check_push_url)


@functools.lru_cache(maxsize=4096)
def _host_of(url: str) -> str:
    """The host alone: URLs may carry tokens in the path or query, never log those."""
    try:
        return urlsplit(url).hostname or "?"
    except ValueError:
        return "?"


def _describe_status(code: int) -> str:
    if 300 <= code < 400:
        return f"HTTP {code} (redirect not followed)"
    return f"HTTP {code}"


def _describe_failure(failure: Failure) -> str:
    exc = failure.value
    if isinstance(exc, ResponseNeverReceived | ResponseFailed) and exc.reasons:
        inner = exc.reasons[0].value
        text = f"{type(exc).__name__}: {type(inner).__name__}: {inner}"
    elif isinstance(exc, CancelledError):
        text = "CancelledError"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return text[:_ERROR_CHARS]
