"""deliver_sm queue of one carrier account: receipts and MO, with redelivery.

A deliver_sm is only done when a receiver answers deliver_sm_resp with status 0.
An error status or no answer within ``response_timeout_s`` sends it again later
(``retry_delay_s`` times the attempt number), up to ``max_attempts`` answers. While
no receiver or transceiver is bound the queue just waits, so receipts survive an
ESME restart; a session lost with deliveries in flight puts them back in front
without counting an attempt (the ESME never answered them).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

import structlog
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from bridge.smpp.codec import Pdu
from carriers.sim.config import DeliveryPolicy

__all__ = ["DeliveryCounters", "DeliveryQueue", "DeliverySink"]

log = structlog.get_logger("carriers.sim.delivery")


class DeliverySink(Protocol):
    """A bound receiver or transceiver session."""

    def send_deliver(self, template: Pdu) -> int:
        """Send ``template`` with a fresh sequence number and return that number."""


@dataclass(slots=True)
class DeliveryCounters:
    """Counters per kind (``receipt`` or ``mo``); ``sent`` includes redeliveries."""

    queued: int = 0
    sent: int = 0
    acked: int = 0
    errors: int = 0
    timeouts: int = 0
    failed: int = 0
    dropped: int = 0

    def as_json(self) -> dict[str, int]:
        return {
            "queued": self.queued, "sent": self.sent, "acked": self.acked,
            "errors": self.errors, "timeouts": self.timeouts, "failed": self.failed,
            "dropped": self.dropped,
        }


@dataclass(slots=True)
class _Item:
    template: Pdu
    kind: str
    attempts: int = 0


@dataclass(slots=True)
class _InFlight:
    item: _Item
    sink: DeliverySink
    timer: IDelayedCall


@dataclass(slots=True)
class _Pending:
    ready: deque[_Item] = field(default_factory=deque)
    retrying: dict[int, tuple[_Item, IDelayedCall]] = field(default_factory=dict)


class DeliveryQueue:
    """Spreads deliver_sm over bound receivers, at most ``window`` unanswered per session."""

    def __init__(self, clock: IReactorTime, policy: DeliveryPolicy, window: int,
                 carrier: str = "") -> None:
        self._clock = clock
        self._policy = policy
        self._window = window
        self._log = log.bind(carrier=carrier)
        self._sinks: list[DeliverySink] = []
        self._next_sink = 0
        self._inflight: dict[tuple[int, int], _InFlight] = {}
        self._per_sink: dict[int, int] = {}
        self._pending = _Pending()
        self._retry_ids = 0
        self.counters: dict[str, DeliveryCounters] = {"receipt": DeliveryCounters(), "mo": DeliveryCounters()}

    # -- state -------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Deliveries not yet acknowledged: queued, in flight, or waiting to retry."""
        return len(self._pending.ready) + len(self._inflight) + len(self._pending.retrying)

    def pending_of(self, kind: str) -> int:
        return (sum(1 for i in self._pending.ready if i.kind == kind)
                + sum(1 for f in self._inflight.values() if f.item.kind == kind)
                + sum(1 for i, _ in self._pending.retrying.values() if i.kind == kind))

    @property
    def has_receiver(self) -> bool:
        return bool(self._sinks)

    # -- sinks -------------------------------------------------------------------
    def add_sink(self, sink: DeliverySink) -> None:
        if sink not in self._sinks:
            self._sinks.append(sink)
            self._per_sink[id(sink)] = 0
        self._pump()

    def remove_sink(self, sink: DeliverySink) -> None:
        """Forget ``sink``; what it had in flight goes back to the front of the queue."""
        if sink not in self._sinks:
            return
        self._sinks.remove(sink)
        self._per_sink.pop(id(sink), None)
        lost = [k for k, f in self._inflight.items() if f.sink is sink]
        for key in reversed(lost):
            flight = self._inflight.pop(key)
            if flight.timer.active():
                flight.timer.cancel()
            flight.item.attempts -= 1
            self._pending.ready.appendleft(flight.item)
        self._pump()

    # -- traffic -----------------------------------------------------------------
    def enqueue(self, template: Pdu, kind: str) -> None:
        """Queue one deliver_sm; when full, the oldest queued one is dropped."""
        if self.pending >= self._policy.pending_limit and self._pending.ready:
            old = self._pending.ready.popleft()
            self.counters[old.kind].dropped += 1
            self._log.warning("sim.delivery.dropped", kind=old.kind, reason="queue full")
        self.counters[kind].queued += 1
        self._pending.ready.append(_Item(template, kind))
        self._pump()

    def acknowledge(self, sink: DeliverySink, sequence: int, status: int) -> bool:
        """Handle a deliver_sm_resp; False when it answers nothing we are waiting for."""
        flight = self._inflight.pop((id(sink), sequence), None)
        if flight is None:
            return False
        self._per_sink[id(sink)] = self._per_sink.get(id(sink), 1) - 1
        if flight.timer.active():
            flight.timer.cancel()
        counters = self.counters[flight.item.kind]
        if status == 0:
            counters.acked += 1
        else:
            counters.errors += 1
            self._log.info("sim.delivery.refused", kind=flight.item.kind, status=status,
                           attempt=flight.item.attempts)
            self._retry(flight.item)
        self._pump()
        return True

    def clear(self) -> None:
        """Drop everything pending and zero the counters (control API reset)."""
        for flight in self._inflight.values():
            if flight.timer.active():
                flight.timer.cancel()
        for _, call in self._pending.retrying.values():
            if call.active():
                call.cancel()
        self._inflight.clear()
        self._per_sink = {id(s): 0 for s in self._sinks}
        self._pending = _Pending()
        self.counters = {"receipt": DeliveryCounters(), "mo": DeliveryCounters()}

    # -- internals ---------------------------------------------------------------
    def _free_sink(self) -> DeliverySink | None:
        for offset in range(len(self._sinks)):
            index = (self._next_sink + offset) % len(self._sinks)
            sink = self._sinks[index]
            if self._per_sink.get(id(sink), 0) < self._window:
                self._next_sink = index + 1
                return sink
        return None

    def _pump(self) -> None:
        ready = self._pending.ready
        while ready:
            sink = self._free_sink()
            if sink is None:
                return
            item = ready.popleft()
            item.attempts += 1
            sequence = sink.send_deliver(item.template)
            key = (id(sink), sequence)
            timer = self._clock.callLater(self._policy.response_timeout_s, self._timed_out, key)
            self._inflight[key] = _InFlight(item, sink, timer)
            self._per_sink[id(sink)] = self._per_sink.get(id(sink), 0) + 1
            self.counters[item.kind].sent += 1

    def _timed_out(self, key: tuple[int, int]) -> None:
        flight = self._inflight.pop(key, None)
        if flight is None:
            return
        self._per_sink[key[0]] = self._per_sink.get(key[0], 1) - 1
        self.counters[flight.item.kind].timeouts += 1
        self._log.info("sim.delivery.timeout", kind=flight.item.kind, attempt=flight.item.attempts)
        self._retry(flight.item)
        self._pump()

    def _retry(self, item: _Item) -> None:
        if item.attempts >= self._policy.max_attempts:
            self.counters[item.kind].failed += 1
            self._log.warning("sim.delivery.gave_up", kind=item.kind, attempts=item.attempts)
            return
        self._retry_ids += 1
        token = self._retry_ids
        delay = self._policy.retry_delay_s * item.attempts
        call = self._clock.callLater(delay, self._requeue, token)
        self._pending.retrying[token] = (item, call)

    def _requeue(self, token: int) -> None:
        entry = self._pending.retrying.pop(token, None)
        if entry is None:
            return
        self._pending.ready.append(entry[0])
        self._pump()
