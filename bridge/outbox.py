"""The push outbox: delivers status reports and MO uplinks to customers' HTTP URLs.

Rows are queued in the store's ``outbox`` table by the pipeline, in the same
transaction as the state change they report. The :class:`Pusher` POSTs each row's
payload verbatim with the Standard Webhooks headers (:mod:`bridge.webhooks`); any 2xx
acknowledges it, anything else (other status, 3xx included since redirects are never
followed, refused connection, DNS failure, timeout) is a failure, until ``max_age_s``
after the row was queued; then the row is dead-lettered. A URL the SSRF policy refuses,
before or after resolution, is dead at once.

Receivers are isolated (:mod:`bridge.receivers`): rows are queued per ``host:port``,
each receiver has its own cap on pushes in flight and its own circuit, so a receiver
that hangs or is down never delays another's pushes. A failure while the receiver is
otherwise healthy retries that row with exponential backoff and full jitter; once the
circuit is open the receiver is probed at its own backoff and, when a probe succeeds,
its backlog drains at full speed.

Delivery is at least once; receivers dedupe by ``webhook-id``. The window for a second
push is kept small: acknowledgements are committed at once (not at the next group-commit
tick), and an acknowledgement whose commit fails is remembered in memory and written
again, with backoff, until a commit succeeds, instead of the row being pushed again.

Throughput: one persistent connection pool (keep-alive), at most ``concurrency`` pushes
in flight, due rows fetched a page at a time, results applied in batches so one commit
covers many acknowledgements. When nothing is due, one timer waits for the earliest
``next_attempt_at`` or probe; :meth:`Pusher.wake` cuts it short.
"""

from __future__ import annotations

import functools
import random
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Any

import structlog
from twisted.internet.defer import CancelledError, Deferred, gatherResults, maybeDeferred, succeed
from twisted.python.failure import Failure
from twisted.web.client import ResponseFailed, ResponseNeverReceived
from twisted.web.iweb import IResponse

from bridge.config import CallbackConfig
from bridge.fastinit import fast_init
from bridge.latency import LATENCY
from bridge.models import OutboxItem
from bridge.pushhttp import BASE_HEADERS, Discard, HTTPClient, PushRefused, build_client
from bridge.receivers import Lane
from bridge.store import Store
from bridge.urlpolicy import checked_push_url, push_target
from bridge.webhooks import NoKeys, SigningKeys, push_headers

__all__ = ["PushStats", "Pusher", "backoff_delay"]

log = structlog.get_logger("outbox")

# Idle connections are dropped a little before common server keep-alive limits
# (twisted.web: 60 s), so a push rarely lands on a connection the server is closing.
_IDLE_CONNECTION_S = 50.0
_STOP_GRACE_S = 5.0
_ERROR_CHARS = 200
# A receiver that came back is found within this (the probe interval's ceiling), so its
# backlog drains soon after it recovers, whatever backoff_max_s says for single rows.
_PROBE_MAX_S = 15.0
# Commits that fail (disk full) are retried no slower than this.
_COMMIT_RETRY_MAX_S = 10.0
# Rows held in memory per receiver; more are parked in the store until it can take them.
_LANE_HOLD_PAGES = 4
# Due rows looked at per pump at most (held, launched or parked).
_FETCH_BUDGET = 4096
# The shortest park, and how often parked rows are looked for; the latency assumed for
# a receiver not heard from yet (optimistic: a row parked too briefly is parked again).
_MIN_PARK_S = 0.05
_FAST_RECEIVER_S = 0.5   # a full lane answering faster than this is not parked (see _hold)
_UNKNOWN_LATENCY_S = 0.01
# Idle receivers are forgotten (with their latency) beyond this many.
_MAX_IDLE_LANES = 1024


@dataclass(frozen=True, slots=True)
class PushStats:
    """A snapshot for /metrics; counters are since this pusher started.

    ``pending`` is the due work the pusher holds (in flight plus fetched rows), a
    lower bound of the backlog: counting every pending row would need a table scan.
    ``open_circuits`` counts receivers currently backed off; ``unsaved`` the outcomes
    whose commit has not succeeded yet (non-zero while the store cannot commit).
    """

    pushed: int
    failed: int
    dead: int
    in_flight: int
    pending: int
    open_circuits: int = 0
    unsaved: int = 0


@dataclass(slots=True)
class _Push:
    """One attempt in flight (mutable, private to this module)."""

    item: OutboxItem
    lane: Lane
    host: str
    started: float
    deferred: Deferred[Any] | None = None
    code: int | None = None
    timed_out: bool = False
    abandoned: bool = False
    finished: bool = False


@fast_init
@dataclass(frozen=True, slots=True)
class _Outcome:
    push: _Push
    code: int | None
    error: str | None      # None: acknowledged
    abandoned: bool = False
    refused: bool = False  # the SSRF policy refused the resolved address


class _Mark(Enum):
    ACKED = "acked"
    FAILED = "failed"
    DEAD = "dead"
    DEFERRED = "deferred"


@fast_init
@dataclass(frozen=True, slots=True)
class _Record:
    """An outcome written to the store, kept until a commit of it succeeds."""

    item: OutboxItem
    mark: _Mark
    at: float
    next_at: float = 0.0
    error: str = ""


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


class Pusher:
    """Pushes due outbox rows; the only writer of push outcomes to the store.

    ``reactor`` provides ``callLater``/``seconds`` (a ``task.Clock`` in tests) and, when
    no ``http_client`` is given, TCP/TLS and name resolution for the default client.
    ``keys`` gives each push's signing secret (none: pushes go unsigned).
    """

    def __init__(self, store: Store, config: CallbackConfig, *, reactor: Any,
                 http_client: HTTPClient | None = None, rng: random.Random | None = None,
                 keys: SigningKeys | None = None) -> None:
        self._store = store
        self._cfg = config
        self._reactor = reactor
        self._rng = rng or random.Random()
        self._keys: SigningKeys = keys or NoKeys()
        self._lane_cap = max(1, min(config.receiver_concurrency, config.concurrency))
        self._pool: Any = None
        self._client = http_client if http_client is not None else self._default_client()
        self._page = max(1, 2 * config.concurrency)
        self._lane_hold = max(self._page, _LANE_HOLD_PAGES * self._lane_cap)
        self._probe_max = min(config.backoff_max_s, _PROBE_MAX_S)
        self._lanes: dict[str, Lane] = {}
        self._held: set[int] = set()
        self._inflight: dict[int, _Push] = {}
        self._outcomes: list[_Outcome] = []
        self._offered: list[OutboxItem] = []   # queued by this process, waiting for their commit
        self._unsaved: dict[int, _Record] = {}
        self._writes: list[Deferred[None]] = []   # store writes of marks, gathered by the next pump
        self._acked: list[OutboxItem] = []         # acknowledged this pass: marked in one statement batch
        self._rewrite = False
        self._maybe_due = True      # the store may have due rows we have not fetched
        self._overflow: set[str] = set()   # receivers whose due rows were left in the store (lane full)
        self._parked_until = 0.0    # rows parked for busy receivers come due until then
        self._park_max = min(config.backoff_max_s, _PROBE_MAX_S)
        self._commit_failures = 0
        self._retry_call: Any = None
        self._pump_call: Any = None
        self._idle_timer: Any = None
        # Push deadlines in launch order: one timeout for all, so the first is the
        # soonest, and one timer serves them all instead of a callLater per push.
        self._deadlines: deque[tuple[float, _Push]] = deque()
        self._deadline_call: Any = None
        self._committing = False
        self._again = False
        self._running = False
        self._stop: _StopState | None = None
        self._pushed = 0
        self._failed = 0
        self._dead = 0

    def _default_client(self) -> HTTPClient:
        self._pool = build_client(self._reactor, timeout=self._cfg.timeout_s,
                                  allow_private=self._cfg.allow_private,
                                  per_host=self._lane_cap, idle_s=_IDLE_CONNECTION_S)
        return self._pool

    # -- public API ---------------------------------------------------------------

    @property
    def stats(self) -> PushStats:
        return PushStats(pushed=self._pushed, failed=self._failed, dead=self._dead,
                         in_flight=len(self._inflight),
                         pending=len(self._inflight) + len(self._held),
                         open_circuits=sum(1 for lane in self._lanes.values() if lane.is_open),
                         unsaved=len(self._unsaved))

    def start(self) -> None:
        """Begin pushing: rows left pending by a previous run are due again now."""
        if self._running or self._stop is not None:
            return
        self._running = True
        self._schedule_pump()

    def offer(self, item: OutboxItem) -> None:
        """A row this process just queued: push it once committed, without a store fetch.

        The store stays the record: a row not taken here (the receiver's lane is full, a
        failed commit, a stop) is still pending there and a fetch finds it.
        """
        if self._running:
            self._offered.append(item)
            self._schedule_pump()

    def wake(self) -> None:
        """New rows were queued and committed: look for due rows now, not at the timer."""
        if self._running:
            self._maybe_due = True
            self._schedule_pump()

    def stop(self, grace_s: float | None = None) -> Deferred[None]:
        """Take no new work; wait up to ``grace_s`` for pushes in flight, then cancel them.

        A cancelled push is not recorded as an attempt: its row stays due and is pushed
        again by the next run. Fires after the outcomes are committed (or their commit
        failed: they are then pushed again by the next run, at least once).
        """
        if self._stop is not None:
            return _follow(self._stop.done)
        self._running = False
        self._stop = _StopState(done=Deferred())
        self._cancel_idle_timer()
        for lane in self._lanes.values():
            lane.queue.clear()
        self._held.clear()
        self._offered.clear()
        grace = min(self._cfg.timeout_s, _STOP_GRACE_S) if grace_s is None else grace_s
        if self._inflight:
            self._stop.timer = self._reactor.callLater(grace, self._abandon_inflight)
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()
            self._retry_call = None
        self._schedule_pump()
        return _follow(self._stop.done)

    # -- the pump: apply outcomes, commit, fetch due rows, launch -----------------

    def _schedule_pump(self) -> None:
        if self._stop is not None and self._stop.finishing:
            return  # stopped: the store may already be closed
        if self._committing or self._retry_call is not None:
            self._again = True  # after the commit in progress, or at the commit retry
        elif self._pump_call is None:
            self._pump_call = self._reactor.callLater(0, self._pump)

    def _pump(self) -> None:
        self._pump_call = None
        if self._stop is not None and self._stop.finishing:
            return
        self._committing = True
        now = self._reactor.seconds()
        self._apply_outcomes(now)
        writes, self._writes = self._writes, []
        # Offered before durable() is asked for, so that commit covers the rows' queuing.
        offered, self._offered = self._offered, []
        # Waiting for the commit makes our marks durable in one group commit, and means
        # rows are only pushed once the transaction that queued them is committed. A
        # failed write counts as a failed commit.
        durable = self._store.durable()
        d = gatherResults([*writes, durable], consumeErrors=True)
        d.addCallbacks(self._committed, self._commit_failed, callbackArgs=(offered,))
        d.addErrback(lambda f: log.error("push.pump_bug", error=f.getErrorMessage()[:_ERROR_CHARS]))
        # Outcomes ride the next group commit (milliseconds away): committing them at once,
        # one fsync per pump, cost a third of the bridge's CPU under load.

    def _committed(self, _: object, offered: list[OutboxItem]) -> Deferred[None]:
        return Deferred.fromCoroutine(self._after_commit(offered))

    async def _after_commit(self, offered: list[OutboxItem]) -> None:
        # Still "committing" while due rows are read (on PostgreSQL that takes a round
        # trip): one fill at a time, or two could fetch and push the same rows.
        # Offers first, while the marks just committed still say which rows are done: a row
        # offered while a fetch was reading the store may have been fetched, pushed and
        # acknowledged by then, and must not go out a second time.
        if self._running:
            self._take_offered(offered, self._reactor.seconds())
        self._unsaved.clear()
        if self._commit_failures:
            log.info("push.store_recovered", failed_commits=self._commit_failures)
        self._commit_failures = 0
        self._rewrite = False
        if self._running:
            now = self._reactor.seconds()
            try:
                await self._fill(now)
                await self._arm_idle_timer(now)
            except Exception as exc:  # noqa: BLE001 (a store read failed; retry like a commit)
                self._committing = False
                self._commit_failed(Failure(exc))
                return
        elif self._stop is not None and not self._inflight and not self._outcomes:
            self._committing = False
            self._finish_stop()
            return
        self._committing = False
        again, self._again = self._again, False
        if again or self._outcomes or self._unsaved:  # (marks made by _fill: dead, parked)
            self._schedule_pump()

    def _take_offered(self, offered: list[OutboxItem], now: float) -> None:
        for item in offered:
            if item.id in self._inflight or item.id in self._held or item.id in self._unsaved:
                continue
            self._hold(item, now)   # a full lane leaves it pending in the store: fetched when low

    def _commit_failed(self, failure: Failure) -> None:
        """The store could not commit (disk full...): keep every outcome, retry with backoff.

        The rollback undid our marks, so the store shows acknowledged rows as pending
        again. They stay in ``_unsaved`` (excluded from fetching, so never pushed again)
        and are written again at the retry. No new pushes go out meanwhile.
        """
        self._committing = False
        self._rewrite = True
        self._commit_failures += 1
        self._maybe_due = True   # offered rows whose commit failed are fetched if they exist
        if self._stop is not None:
            log.error("push.unsaved_at_stop", unsaved=len(self._unsaved),
                      error=failure.getErrorMessage()[:_ERROR_CHARS])
            self._finish_stop()
            return
        delay = backoff_delay(self._commit_failures - 1, self._cfg.backoff_initial_s,
                              max(self._cfg.backoff_initial_s, _COMMIT_RETRY_MAX_S), self._rng)
        log.error("push.commit_failed", error_type=failure.type.__name__,
                  error=failure.getErrorMessage()[:_ERROR_CHARS], unsaved=len(self._unsaved),
                  failed_commits=self._commit_failures, retry_in_s=round(delay, 3))
        self._cancel_idle_timer()
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()
        self._retry_call = self._reactor.callLater(delay, self._retry_commit)

    def _retry_commit(self) -> None:
        self._retry_call = None
        self._maybe_due = True
        self._again = False
        self._schedule_pump()

    # -- fetching due rows into receivers' lanes ----------------------------------

    async def _fill(self, now: float) -> None:
        """Launch what the lanes hold; fetch more while slots are free and rows may be due.

        A fetch pass ends when the store has no more due rows, when a page could neither
        be launched nor parked (every receiver it holds rows for is busy: wait for their
        completions), or after a bounded number of rows. A wake, a timer or a lane running
        low starts the next one.
        """
        examined = 0
        self._launch_ready(now)
        if any(len(lane.queue) <= self._lane_hold // 2 for key in self._overflow
               if (lane := self._lanes.get(key)) is not None):
            self._maybe_due = True   # a receiver whose rows were left behind is running low
        while (self._maybe_due and len(self._inflight) < self._cfg.concurrency
               and examined < _FETCH_BUDGET):
            self._overflow.clear()
            # Rows offered since this pump began are taken by the next one, not fetched.
            exclude = (*self._inflight, *self._held, *self._unsaved, *(i.id for i in self._offered))
            page = await self._store.outbox.due(now, self._page, exclude=exclude)
            examined += len(page)
            parked = sum(1 for item in page if self._hold(item, now))
            launched = self._launch_ready(now)
            if len(page) < self._page or not (launched or parked):
                # (A fast receiver's overflow is neither launched nor parked: see _hold.)
                self._maybe_due = False
        for lane in self._lanes.values():
            lane.parked = 0

    def _hold(self, item: OutboxItem, now: float) -> bool:
        """Queue a fetched row on its receiver's lane; True if it was parked instead."""
        key = _receiver_of(item.url)
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = Lane(key, self._probe_delay)
        if len(lane.queue) < self._lane_hold:
            lane.queue.append(item)
            self._held.add(item.id)
            return False
        # Full. A fast, healthy receiver works off what it holds within moments: leave the
        # row due in the store and fetch it again then (writing it back each time cost a
        # third of the bridge's CPU under load). A slow or failing receiver's backlog is
        # parked in the store, so it never crowds other receivers' rows out of the fetch:
        # an open circuit until the next probe, a slow receiver until it has worked off
        # what it holds (estimated from its latency).
        if not lane.is_open and lane.latency is not None and lane.latency < _FAST_RECEIVER_S:
            self._overflow.add(key)
            return False
        lane.parked += 1
        if lane.is_open:
            later = lane.probe_at
        else:
            per_row = (lane.latency if lane.latency is not None else _UNKNOWN_LATENCY_S) / self._lane_cap
            later = now + min((len(lane.queue) + lane.parked) * per_row, self._park_max)
        self._record(_Record(item, _Mark.DEFERRED, now, next_at=max(later, now + _MIN_PARK_S)))
        self._parked_until = max(self._parked_until, later)
        return True

    def _probe_delay(self, failed_probes: int) -> float:
        return backoff_delay(failed_probes, self._cfg.backoff_initial_s, self._probe_max, self._rng)

    def _launch_ready(self, now: float) -> int:
        """Round-robin over receivers, so a long backlog for one does not starve the others."""
        launched = 0
        progress = True
        while progress and len(self._inflight) < self._cfg.concurrency:
            progress = False
            for lane in list(self._lanes.values()):
                if len(self._inflight) >= self._cfg.concurrency:
                    break
                if lane.queue and lane.can_send(now, self._lane_cap):
                    item = lane.queue.popleft()
                    self._held.discard(item.id)
                    self._launch(item, lane, now)
                    launched += 1
                    progress = True
        if len(self._lanes) > _MAX_IDLE_LANES:
            for key in [k for k, lane in self._lanes.items() if lane.idle]:
                del self._lanes[key]
        return launched

    async def _arm_idle_timer(self, now: float) -> None:
        self._cancel_idle_timer()
        wake_at: list[float] = [lane.probe_at for lane in self._lanes.values()
                                if lane.is_open and lane.queue and lane.in_flight == 0
                                and lane.probe_at > now]  # a due probe waits for a free slot
        if len(self._inflight) < self._cfg.concurrency:
            nxt = await self._store.outbox.next_due_at()
            if nxt is not None:
                # A due row not launched is held for an open circuit or in flight: look
                # again after a while for rows that become due meanwhile.
                wake_at.append(nxt if nxt > now else now + self._cfg.backoff_initial_s)
            if self._parked_until > now:
                wake_at.append(now + _MIN_PARK_S)  # parked rows come due a few at a time
        if wake_at:
            self._idle_timer = self._reactor.callLater(max(0.0, min(wake_at) - now),
                                                       self._idle_timer_fired)

    def _idle_timer_fired(self) -> None:
        self._idle_timer = None
        self._maybe_due = True
        self._schedule_pump()

    def _cancel_idle_timer(self) -> None:
        if self._idle_timer is not None and self._idle_timer.active():
            self._idle_timer.cancel()
        self._idle_timer = None

    # -- one push -----------------------------------------------------------------

    def _launch(self, item: OutboxItem, lane: Lane, now: float) -> None:
        host = _host_of(item.url)
        problem = checked_push_url(item.url, self._cfg.allowed_hosts, self._cfg.allow_private)
        if problem is not None:
            # Retrying cannot make a refused URL acceptable; an operator who widens the
            # lists can requeue dead rows.
            self._dead_letter(item, f"url policy: {problem}", now, host)
            self._schedule_pump()  # the next pump commits this
            return
        push = _Push(item=item, lane=lane, host=host, started=now)
        self._inflight[item.id] = push
        lane.launched()
        body = item.payload.encode("utf-8")
        headers = push_headers(item, body, int(now), self._keys.secret_for(item), BASE_HEADERS)
        d = maybeDeferred(self._client.request, "POST", item.url, data=body, headers=headers,
                          allow_redirects=False, unbuffered=True, reactor=self._reactor)
        push.deferred = d
        self._deadlines.append((self._reactor.seconds() + self._cfg.timeout_s, push))
        if self._deadline_call is None:
            self._deadline_call = self._reactor.callLater(self._cfg.timeout_s, self._deadlines_due)
        d.addCallback(self._got_response, push)
        d.addCallbacks(self._succeeded, self._errored, callbackArgs=(push,), errbackArgs=(push,))

    def _got_response(self, response: IResponse, push: _Push) -> Deferred[None] | None:
        push.code = response.code
        if response.length == 0:
            return None   # (the pool's answers: body already read and dropped)
        body = Discard()
        response.deliverBody(body)
        return body.done

    def _deadlines_due(self) -> None:
        self._deadline_call = None
        now = self._reactor.seconds()
        deadlines = self._deadlines
        while deadlines and (deadlines[0][1].finished or deadlines[0][0] <= now):
            _, push = deadlines.popleft()
            if not push.finished:
                self._time_out(push)
        if deadlines and self._deadline_call is None:
            self._deadline_call = self._reactor.callLater(max(0.0, deadlines[0][0] - now), self._deadlines_due)

    def _time_out(self, push: _Push) -> None:
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
        deadlines = self._deadlines
        while deadlines and deadlines[0][1].finished:
            deadlines.popleft()
        if not deadlines and self._deadline_call is not None:
            self._deadline_call.cancel()   # nothing in flight: no timer left behind
            self._deadline_call = None
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
            refused = failure.check(PushRefused) is not None
            text = f"url policy: {failure.getErrorMessage()}" if refused else _describe_failure(failure)
            self._outcomes.append(_Outcome(push, None, text[:_ERROR_CHARS], refused=refused))
        self._schedule_pump()

    # -- recording outcomes -------------------------------------------------------

    def _apply_outcomes(self, now: float) -> bool:
        """Turn finished pushes into store marks; True if anything was written."""
        outcomes, self._outcomes = self._outcomes, []
        if self._rewrite:
            # The last commit failed and was rolled back: write every unsaved mark again.
            self._rewrite = False
            for record in self._unsaved.values():
                self._write(record)
        for out in outcomes:
            push = out.push
            self._inflight.pop(push.item.id, None)
            if out.abandoned:
                push.lane.abandoned()
                continue
            if out.error is None:
                self._on_acked(out, now)
            else:
                self._on_failed(out, now)
        if self._acked:
            acked, self._acked = self._acked, []
            self._writes.append(self._store.outbox.mark_pushed(acked, now))
        return bool(self._unsaved)

    def _on_acked(self, out: _Outcome, now: float) -> None:
        push, item = out.push, out.push.item
        push.lane.observe(now - push.started)
        if push.lane.succeeded():
            log.info("push.receiver_recovered", receiver=push.lane.key, backlog=len(push.lane.queue))
        self._unsaved[item.id] = _Record(item, _Mark.ACKED, now)
        self._acked.append(item)
        LATENCY.push_acked(item.kind, item.created_at, now)
        self._pushed += 1
        log.debug("push.acked", outbox_id=item.id, kind=item.kind, ref_id=item.ref_id,
                  host=push.host, status=out.code, attempt=item.attempts + 1,
                  elapsed_s=round(now - push.started, 3))

    def _on_failed(self, out: _Outcome, now: float) -> None:
        push, item, lane = out.push, out.push.item, out.push.lane
        assert out.error is not None
        if out.refused:
            lane.in_flight -= 1  # the policy's verdict on a URL says nothing of the receiver
            self._dead_letter(item, out.error, now, push.host, out.code)
            return
        was_open = lane.is_open
        lane.observe(now - push.started)
        lane.failed(now)
        if lane.is_open and not was_open:
            log.warning("push.receiver_down", receiver=lane.key, error=out.error,
                        probe_in_s=round(lane.probe_at - now, 3), backlog=len(lane.queue))
        deadline = item.created_at + self._cfg.max_age_s
        if now >= deadline:
            self._dead_letter(item, out.error, now, push.host, out.code)
        else:
            if lane.is_open:
                next_at = lane.probe_at  # the receiver's backoff, not this row's
            else:
                next_at = now + backoff_delay(item.attempts, self._cfg.backoff_initial_s,
                                              self._cfg.backoff_max_s, self._rng)
            if next_at > deadline:
                next_at = deadline  # one last try at the deadline (as the receiver's probe)
                if lane.is_open:
                    lane.probe_at = min(lane.probe_at, deadline)
            self._record(_Record(item, _Mark.FAILED, now, next_at=next_at, error=out.error))
            self._failed += 1
            log.info("push.failed", outbox_id=item.id, kind=item.kind, ref_id=item.ref_id,
                     host=push.host, status=out.code, error=out.error, attempt=item.attempts + 1,
                     next_delay_s=round(next_at - now, 3))
        if lane.is_open:
            self._expire_held(lane, now, out.error)

    def _expire_held(self, lane: Lane, now: float, error: str) -> None:
        """Rows held for a receiver that stays down die at their deadline like pushed ones."""
        keep = [i for i in lane.queue if now < i.created_at + self._cfg.max_age_s]
        if len(keep) == len(lane.queue):
            return
        for item in lane.queue:
            if now >= item.created_at + self._cfg.max_age_s:
                self._held.discard(item.id)
                self._dead_letter(item, f"receiver unavailable: {error}", now, _host_of(item.url))
        lane.queue.clear()
        lane.queue.extend(keep)

    def _dead_letter(self, item: OutboxItem, error: str, now: float, host: str,
                     code: int | None = None) -> None:
        self._record(_Record(item, _Mark.DEAD, now, error=error))
        self._dead += 1
        log.warning("push.dead", outbox_id=item.id, kind=item.kind, ref_id=item.ref_id, host=host,
                    status=code, error=error, attempt=item.attempts + 1,
                    age_s=round(now - item.created_at, 3))

    def _record(self, record: _Record) -> None:
        """Write a mark now and keep it until its commit succeeds (see :meth:`_commit_failed`)."""
        self._unsaved[record.item.id] = record
        self._write(record)

    def _write(self, record: _Record) -> None:
        item, outbox = record.item, self._store.outbox
        if record.mark is _Mark.ACKED:
            d = outbox.mark_pushed([item], record.at)
        elif record.mark is _Mark.FAILED:
            d = outbox.mark_failed(item, record.next_at, record.error)
        elif record.mark is _Mark.DEAD:
            d = outbox.mark_dead(item, record.error)
        else:
            d = outbox.defer(item, record.next_at)
        self._writes.append(d)

    def _finish_stop(self) -> None:
        stop = self._stop
        if stop is None or stop.finishing:
            return
        stop.finishing = True
        self._cancel_idle_timer()
        for call in (self._pump_call, self._retry_call, stop.timer, self._deadline_call):
            if call is not None and call.active():
                call.cancel()
        self._pump_call = self._retry_call = stop.timer = self._deadline_call = None
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


@functools.lru_cache(maxsize=4096)
def _host_of(url: str) -> str:
    """The host alone: URLs may carry tokens in the path or query, never log those."""
    target = push_target(url)
    return target.host if target is not None else "?"


@functools.lru_cache(maxsize=4096)
def _receiver_of(url: str) -> str:
    """The ``host:port`` a URL's pushes queue under."""
    target = push_target(url)
    return target.key if target is not None else "?"


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
