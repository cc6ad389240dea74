"""One configured bind: connect, bind, keep it up, feed its window, stop gracefully.

A :class:`Bind` lives as long as the link; each TCP connection is an
:class:`~bridge.smpp.session.EsmeSession`. The reconnect loop is written here rather
than delegated to ``ClientService`` because the delay depends on *why* the previous
session ended (bad credentials retry slowly, a bind that flaps keeps its backoff), and
``ClientService``'s retry policy only sees an attempt count; the curve itself is still
Twisted's ``backoffPolicy`` (see :mod:`bridge.smpp.backoff`).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure

from bridge.latency import LATENCY
from bridge.smpp.adaptive import AdaptiveRate
from bridge.smpp.backoff import ReconnectBackoff, ThrottleBackoff
from bridge.smpp.ratelimit import TokenBucket
from bridge.smpp.session import EsmeSession, SubmitAnswer
from bridge.smpp.state import BindEvent, BindState, BindStateMachine
from bridge.smpp.status import (
    NO_RESPONSE,
    UNENCODABLE,
    BindVerdict,
    SubmitVerdict,
    classify_bind,
    classify_submit,
    status_name,
)
from bridge.smpp.types import BindStatus, SubmitOutcome

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger
    from twisted.internet.interfaces import (
        IAddress,
        IDelayedCall,
        IReactorTime,
        IStreamClientEndpoint,
    )

    from bridge.smpp.codec import Pdu
    from bridge.smpp.config import BindConfig, LinkPolicy
    from bridge.smpp.queue import QueueEntry, SegmentQueue

__all__ = ["Bind", "DeliverCallback", "OutcomeSink"]

OutcomeSink = Callable[[list[SubmitOutcome]], None]
DeliverCallback = Callable[[str, str, "Pdu"], Deferred[int]]

#: Token-bucket refills are batched: never wake up more often than this.
_MIN_REFILL_S = 0.002
#: Longest wait for unbind_resp after draining, before the connection is cut.
_UNBIND_GRACE_S = 5.0
#: Lowest adapted rate (segments/s); an SMSC that throttles even this gets paused.
_RATE_FLOOR = 1.0


class _SessionFactory(Factory):
    noisy = False   # no "Starting factory" line per connection attempt

    def __init__(self, bind: Bind) -> None:
        self._bind = bind

    def buildProtocol(self, addr: IAddress) -> EsmeSession:  # noqa: N802 (Twisted API)
        b = self._bind
        return EsmeSession(b.config, b, b.clock, b.log)


class Bind:
    """State machine, reconnect loop, rate limit, throttle pause and counters of one bind."""

    def __init__(self, bind_id: str, config: BindConfig, *, clock: IReactorTime,
                 endpoint: IStreamClientEndpoint, queue: SegmentQueue, policy: LinkPolicy,
                 on_outcomes: OutcomeSink, on_requeued: Callable[[], None],
                 on_deliver: DeliverCallback, rng: random.Random,
                 log: FilteringBoundLogger) -> None:
        self.bind_id = bind_id
        self.config = config
        self.clock = clock
        self.log = log.bind(carrier=config.carrier, bind_id=bind_id,
                            system_id=config.system_id, bind_type=config.bind_type)
        self._endpoint = endpoint
        self._queue = queue
        self._policy = policy
        self._on_outcomes = on_outcomes
        self._on_requeued = on_requeued
        self._on_deliver = on_deliver
        self._sm = BindStateMachine(clock.seconds, self.log)
        self._backoff = ReconnectBackoff(config.reconnect_initial_s, config.reconnect_max_s,
                                         config.credentials_retry_s, rng)
        self._throttle = ThrottleBackoff(config.throttle_initial_s, config.throttle_max_s)
        self._rate = AdaptiveRate(config.tps, floor=_RATE_FLOOR)
        self._bucket = (TokenBucket(config.tps, config.bucket_size, clock.seconds())
                        if config.tps is not None else None)
        self._factory = _SessionFactory(self)
        self._session: EsmeSession | None = None
        self._connecting: Deferred[EsmeSession] | None = None
        self._refused: BindVerdict | None = None
        self._bound_at: float | None = None
        self._paused_until: float | None = None
        self._resumed_at = 0.0
        self._pumping = False
        self._calls: dict[str, IDelayedCall] = {}
        self._stop_waiters: list[Deferred[None]] = []
        # counters
        self.connects = 0
        self.submitted = 0
        self.throttled = 0
        self.errors = 0
        self.received = 0
        self.in_flight_peak = 0
        self.last_error: str | None = None

    # -- introspection -------------------------------------------------------

    @property
    def state(self) -> BindState:
        return self._sm.state

    @property
    def in_flight(self) -> int:
        return self._session.in_flight if self._session is not None else 0

    @property
    def session(self) -> EsmeSession | None:
        return self._session

    def status(self, queued: int) -> BindStatus:
        return BindStatus(
            bind_id=self.bind_id, carrier=self.config.carrier, bind_type=self.config.bind_type,
            state=self._sm.state.value, since=self._sm.since, window=self.config.window,
            in_flight=self.in_flight, in_flight_peak=self.in_flight_peak,
            queued=queued if self.config.submits else 0, submitted=self.submitted,
            throttled=self.throttled, errors=self.errors, last_error=self.last_error,
            reconnects=max(0, self.connects - 1), received=self.received,
            paused_until=self._paused_until,
        )

    # -- timers ----------------------------------------------------------------

    def _call_later(self, name: str, delay: float, fn: Callable[[], None]) -> None:
        self._cancel(name)

        def fire() -> None:
            del self._calls[name]
            fn()

        self._calls[name] = self.clock.callLater(delay, fire)

    def _cancel(self, *names: str) -> None:
        for name in names:
            call = self._calls.pop(name, None)
            if call is not None and call.active():
                call.cancel()

    # -- connect / bind / reconnect --------------------------------------------

    def start(self) -> None:
        if self._sm.state not in (BindState.IDLE, BindState.STOPPED):
            return
        self._backoff.reset()
        self._sm.fire(BindEvent.START)
        self._connect()

    def _connect(self) -> None:
        self.connects += 1
        self._refused = None
        d = self._endpoint.connect(self._factory)
        self._connecting = d
        d.addCallbacks(self._connect_done, self._connect_failed)

    def _connect_done(self, session: EsmeSession) -> None:
        self._connecting = None

    def _connect_failed(self, failure: Failure) -> None:
        self._connecting = None
        if failure.check(CancelledError) or self._sm.state is not BindState.CONNECTING:
            return
        self._note_error(f"connect failed: {failure.getErrorMessage()}")
        self.log.warning("bind.connect_failed", error=failure.getErrorMessage())
        self._sm.fire(BindEvent.CONNECT_FAILED)
        self._schedule_retry()

    def _schedule_retry(self) -> None:
        credentials = self._refused is BindVerdict.CREDENTIALS
        delay = self._backoff.next_delay(credentials=credentials)
        self.log.info("bind.reconnect_scheduled", delay_s=round(delay, 3),
                      attempt=self._backoff.failures, credentials=credentials)
        self._call_later("retry", delay, self._retry)

    def _retry(self) -> None:
        self._sm.fire(BindEvent.RETRY)
        self._connect()

    def session_connected(self, session: EsmeSession) -> None:
        if self._sm.state is not BindState.CONNECTING or self._session is not None:
            # A connect that completed after stop() cancelled it: not ours any more.
            session.abort()
            return
        self._session = session
        self._sm.fire(BindEvent.CONNECTED)
        session.bind()

    def session_bound(self, session: EsmeSession, system_id: str) -> None:
        if session is not self._session:
            return
        self._bound_at = self.clock.seconds()
        self._sm.fire(BindEvent.BOUND, smsc_system_id=system_id)
        self.pump()

    def session_bind_refused(self, session: EsmeSession, status: int) -> None:
        verdict = classify_bind(status)
        self._refused = verdict
        self._note_error(f"bind refused: {status_name(status)}")
        if verdict is BindVerdict.CREDENTIALS:
            self.log.error("bind.credentials_rejected", status=status_name(status), alert=True)
        else:
            self.log.warning("bind.refused", status=status_name(status))

    def session_lost(self, session: EsmeSession, unanswered: list[QueueEntry],
                     timed_out: list[QueueEntry], reason: str) -> None:
        if session is not self._session:
            return
        self._session = None
        self._cancel("refill", "resume")
        self._paused_until = None
        outcomes = self._requeue_unanswered(unanswered, timed_out)
        state = self._sm.state
        self.log.info("bind.connection_lost", reason=reason, requeued=len(unanswered) - len(outcomes))
        if state.stopping:
            self._sm.fire(BindEvent.LOST)
            self._finish_stop()
        else:
            stable = (self._bound_at is not None
                      and self.clock.seconds() - self._bound_at >= self.config.stable_after_s)
            if stable:
                self._backoff.reset()
            self._bound_at = None
            self._sm.fire(BindEvent.LOST, reason=reason)
            self._schedule_retry()
        if unanswered:
            self._on_requeued()
        if outcomes:
            self._on_outcomes(outcomes)

    def _requeue_unanswered(self, unanswered: list[QueueEntry],
                            timed_out: list[QueueEntry]) -> list[SubmitOutcome]:
        """Back to the queue in order as possible duplicates; a segment that keeps
        timing out is given up so it cannot block the carrier for ever."""
        blamed = {id(e) for e in timed_out}
        back: list[QueueEntry] = []
        outcomes: list[SubmitOutcome] = []
        for entry in unanswered:
            entry.mark_possible_duplicate()
            if id(entry) in blamed:
                entry.timeouts += 1
                if entry.timeouts > self._policy.max_timeouts:
                    self.log.info("submit.failed", segment_id=entry.segment.segment_id,
                                  status=status_name(NO_RESPONSE), timeouts=entry.timeouts)
                    outcomes.append(SubmitOutcome(entry.segment, NO_RESPONSE, None, True, self.bind_id))
                    self._queue.finished((entry,))
                    continue
            back.append(entry)
        self._queue.put_back(back)
        return outcomes

    # -- submitting ----------------------------------------------------------

    def pump(self) -> None:
        """Fill the window from the link's queue, within the token bucket, in one write."""
        if self._pumping or self._paused_until is not None or self._sm.state is not BindState.BOUND:
            return
        session = self._session
        if session is None or not session.ready or not self.config.submits:
            return
        queue = self._queue
        want = min(self.config.window - session.in_flight, len(queue))
        if want <= 0:
            return
        bucket = self._bucket
        if bucket is not None:
            now = self.clock.seconds()
            granted = bucket.take(want, now)
            if granted < want and "refill" not in self._calls:
                delay = max(_MIN_REFILL_S, bucket.delay_for(1, now))
                self._call_later("refill", delay, self.pump)
            want = granted
            if want == 0:
                return
        entries = queue.take(want)
        if len(entries) < want:
            # The rest are parts waiting for their predecessor's answer, which pumps again.
            if bucket is not None:
                bucket.refund(want - len(entries))
            self._cancel("refill")
        if not entries:
            return
        self._pumping = True
        try:
            rejected = session.submit(entries)
        finally:
            self._pumping = False
        if session.in_flight > self.in_flight_peak:
            self.in_flight_peak = session.in_flight
        if rejected:
            self._on_outcomes([self._final(entry, UNENCODABLE, f"unencodable: {why}")
                               for entry, why in rejected])

    def session_answers(self, session: EsmeSession, answers: list[SubmitAnswer]) -> None:
        if session is not self._session:
            return
        outcomes: list[SubmitOutcome] = []
        back: list[QueueEntry] = []
        accepted = 0
        throttled = 0
        fresh_accept = False
        slowed = False
        done: list[QueueEntry] = []
        now = self.clock.seconds()
        bind_id = self.bind_id
        max_retries = self._policy.max_transient_retries
        for answer in answers:
            verdict = classify_submit(answer.status, nacked=answer.nacked)
            entry = answer.entry
            if verdict is SubmitVerdict.ACCEPTED:
                accepted += 1
                done.append(entry)
                outcomes.append(SubmitOutcome(entry.segment, 0, answer.message_id, False, bind_id))
                if answer.sent_at >= self._resumed_at:
                    fresh_accept = True
            elif verdict is SubmitVerdict.THROTTLED:
                throttled += 1
                back.append(entry)
                slowed = self._rate.throttled(answer.sent_at, now) or slowed
            elif verdict is SubmitVerdict.TRANSIENT:
                entry.transient_failures += 1
                what = "generic_nack" if answer.nacked else status_name(answer.status)
                self._note_error(f"submit answered {what}")
                if entry.transient_failures > max_retries:
                    outcomes.append(self._final(entry, answer.status, what))
                else:
                    self.log.debug("submit.retry", segment_id=entry.segment.segment_id, status=what,
                                   attempt=entry.transient_failures)
                    back.append(entry)
            else:
                self._note_error(f"submit answered {status_name(answer.status)}")
                outcomes.append(self._final(entry, answer.status, status_name(answer.status)))
        LATENCY.submit_answers(self.config.carrier, bind_id, answers, self.clock.seconds())
        self.submitted += accepted
        released = self._queue.finished(done)
        if accepted:
            before = self._rate.rate
            self._rate.accepted(accepted, now)
            rate = self._rate.rate
            if rate != before and self._bucket is not None and rate is not None:
                # climbing back after a throttle (a bind never throttled keeps its tps and burst)
                self._bucket.set_rate(rate, _burst(rate), now)
                self._cancel("refill")  # the pump below waits for a token at the new rate
        if throttled:
            self.throttled += throttled
            if slowed:
                self._slow_down(now)
            elif self._rate.at_floor:
                self._pause()
        elif fresh_accept and self._paused_until is None:
            self._throttle.reset()
        if back:
            self._queue.put_back(back)
        if self._sm.state is BindState.DRAINING and session.in_flight == 0:
            self._drained()
        elif back or released:
            self._on_requeued()  # every bind may take what came back or was waiting for it
        else:
            self.pump()
        if outcomes:
            self._on_outcomes(outcomes)

    def _final(self, entry: QueueEntry, status: int, why: str) -> SubmitOutcome:
        self._queue.finished((entry,))
        self.log.info("submit.failed", segment_id=entry.segment.segment_id, status=why)
        return SubmitOutcome(entry.segment, status, None, True, self.bind_id)

    def _slow_down(self, now: float) -> None:
        """ESME_RTHROTTLED/RMSGQFUL: send slower from now on (see :mod:`bridge.smpp.adaptive`).

        The saved tokens are dropped, so the throttled segments (back at the head of
        the queue, in order) are the next to go, one token interval later.
        """
        rate = self._rate.rate
        assert rate is not None
        if self._bucket is None:
            self._bucket = TokenBucket(rate, _burst(rate), now)
        else:
            self._bucket.set_rate(rate, _burst(rate), now)
        self._bucket.drain(now)
        self.log.warning("bind.throttled", tps=round(rate, 2), decreases=self._rate.decreases,
                         in_flight=self.in_flight)

    def _pause(self) -> None:
        """Throttled even at the floor rate (a full queue, not a rate): the whole bind waits."""
        if self._paused_until is not None:
            return
        pause = self._throttle.next_pause()
        self._paused_until = self.clock.seconds() + pause
        self.log.warning("bind.throttled", pause_s=pause, episode=self._throttle.episodes,
                         in_flight=self.in_flight)
        self._call_later("resume", pause, self._resume)

    def _resume(self) -> None:
        self._paused_until = None
        self._resumed_at = self.clock.seconds()
        self.log.info("bind.resumed")
        self.pump()

    # -- inbound -----------------------------------------------------------------

    def session_deliver(self, session: EsmeSession, pdu: Pdu) -> Deferred[int]:
        self.received += 1
        if not self.config.receives:
            self.log.warning("deliver.on_transmitter", seq=pdu.sequence)
        return self._on_deliver(self.config.carrier, self.bind_id, pdu)

    def session_error(self, session: EsmeSession, detail: str) -> None:
        self._note_error(detail)

    def _note_error(self, detail: str) -> None:
        self.errors += 1
        self.last_error = detail

    # -- graceful stop -------------------------------------------------------------

    def stop(self, drain_timeout_s: float) -> Deferred[None]:
        """Stop submitting, wait (bounded) for in-flight answers, unbind, disconnect."""
        state = self._sm.state
        self._cancel("retry", "refill", "resume")
        self._paused_until = None
        if state in (BindState.IDLE, BindState.STOPPED, BindState.WAITING, BindState.CONNECTING):
            self._sm.fire(BindEvent.STOP)
            if self._connecting is not None:
                self._connecting.cancel()
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._stop_waiters.append(waiter)
        if state.stopping:
            return waiter
        grace = min(self.config.response_timeout_s, _UNBIND_GRACE_S)
        self._call_later("abort", max(0.0, drain_timeout_s) + grace, self._abort_session)
        self._sm.fire(BindEvent.STOP)
        if self._sm.state is BindState.CLOSING:
            if self._session is not None:
                self._session.close()
        elif self.in_flight == 0:
            self._drained()
        else:
            self.log.info("bind.draining", in_flight=self.in_flight, drain_timeout_s=drain_timeout_s)
            self._call_later("drain", max(0.0, drain_timeout_s), self._drain_timeout)
        return waiter

    def abort(self) -> Deferred[None]:
        """Stop at once, cutting the connection: unanswered submits go back to the queue
        flagged as possible duplicates. For a bind whose cluster lease is about to lapse."""
        done = self.stop(0.0)
        if self._session is not None:
            self._session.abort()
        return done

    def _drain_timeout(self) -> None:
        if self._sm.state is BindState.DRAINING:
            self.log.warning("bind.drain_timeout", in_flight=self.in_flight)
            self._drained()

    def _drained(self) -> None:
        self._cancel("drain")
        self._sm.fire(BindEvent.DRAINED)
        if self._session is not None:
            self._session.unbind()

    def _abort_session(self) -> None:
        if self._session is not None:
            self.log.warning("bind.unbind_timeout")
            self._session.abort()

    def _finish_stop(self) -> None:
        self._cancel("drain", "abort")
        waiters, self._stop_waiters = self._stop_waiters, []
        for waiter in waiters:
            waiter.callback(None)


def _burst(rate: float) -> int:
    """Token-bucket capacity at an adapted rate: 10 ms worth, at least one.

    Small, so that near the SMSC's limit segments go out evenly spaced rather than in
    bursts a throttle could cut through the middle of (reordering a message's parts).
    """
    return max(1, round(rate / 100))
