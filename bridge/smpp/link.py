"""All binds of one carrier account and the carrier's in-memory submit queue.

The pipeline keeps the queue topped up to :meth:`CarrierLink.room` from its store and
gets one :class:`~bridge.smpp.types.SubmitOutcome` per segment, in batches. Every
submitting bind pulls from the one queue, so a bind that goes down hands its
unanswered segments to the others instead of sitting on them.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import structlog
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)

from bridge.smpp.bind import Bind, DeliverCallback
from bridge.smpp.config import BindConfig, LinkPolicy
from bridge.smpp.queue import SegmentQueue
from bridge.smpp.state import BindState
from bridge.smpp.types import BindStatus, OutboundSegment, StopReport, SubmitOutcome

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger
    from twisted.internet.interfaces import IStreamClientEndpoint

__all__ = ["CarrierLink", "EndpointFactory", "tcp_endpoint"]

EndpointFactory = Callable[[object, BindConfig], "IStreamClientEndpoint"]


def tcp_endpoint(reactor: object, config: BindConfig) -> IStreamClientEndpoint:
    """TCP (optionally TLS) client endpoint for ``config``'s host and port.

    An IP literal connects directly; only a host name goes through the resolver
    (whose getaddrinfo runs in the reactor's thread pool).
    """
    endpoint: IStreamClientEndpoint
    if isIPAddress(config.host):
        endpoint = TCP4ClientEndpoint(reactor, config.host, config.port,
                                      timeout=config.connect_timeout_s)
    elif isIPv6Address(config.host):
        endpoint = TCP6ClientEndpoint(reactor, config.host, config.port,
                                      timeout=config.connect_timeout_s)
    else:
        endpoint = HostnameEndpoint(reactor, config.host, config.port,
                                    timeout=config.connect_timeout_s)
    if config.tls:
        from twisted.internet.ssl import Certificate, optionsForClientTLS, platformTrust

        trust = platformTrust()
        if config.tls_ca_file:
            with open(config.tls_ca_file, "rb") as fh:
                trust = Certificate.loadPEM(fh.read())
        endpoint = wrapClientTLS(optionsForClientTLS(config.host, trustRoot=trust), endpoint)
    return endpoint


class CarrierLink:
    """Binds of one carrier plus its queue.

    ``on_outcomes`` receives lists of outcomes (one list per chunk of SMSC answers,
    so the pipeline can group-commit). ``on_deliver(carrier, bind_id, pdu)`` must
    return a Deferred firing with the deliver_sm_resp status once the PDU is durably
    recorded; if it fails the SMSC is answered ESME_RX_T_APPN and will redeliver.
    Bind ids are ``"<carrier>-<n>"``, n counting from 1 in ``binds`` order.

    ``leased`` (cluster mode): the binds are cluster-wide slots and :meth:`start` opens
    none of them; :meth:`open_bind` and :meth:`close_bind` open and close bind ``n`` as
    this instance wins and gives back slot ``n``.
    """

    def __init__(self, carrier: str, binds: Sequence[BindConfig], *, reactor: object,
                 on_outcomes: Callable[[list[SubmitOutcome]], None],
                 on_deliver: DeliverCallback,
                 policy: LinkPolicy | None = None,
                 endpoint_factory: EndpointFactory = tcp_endpoint,
                 rng: random.Random | None = None,
                 log: FilteringBoundLogger | None = None,
                 leased: bool = False) -> None:
        if not binds:
            raise ValueError(f"{carrier}: a carrier link needs at least one bind")
        for cfg in binds:
            if cfg.carrier != carrier:
                raise ValueError(f"bind for {cfg.carrier!r} given to the {carrier!r} link")
        self.carrier = carrier
        self.policy = policy or LinkPolicy()
        self._on_outcomes = on_outcomes
        self._queue = SegmentQueue()
        self._running = False
        self._turn = 0
        self._log = (log or structlog.get_logger("bridge.smpp")).bind(carrier=carrier)
        rng = rng or random.Random()
        self._binds = [
            Bind(f"{carrier}-{n}", cfg, clock=reactor, endpoint=endpoint_factory(reactor, cfg),
                 queue=self._queue, policy=self.policy, on_outcomes=self._deliver_outcomes,
                 on_requeued=self._pump, on_deliver=on_deliver, rng=rng, log=self._log)
            for n, cfg in enumerate(binds, start=1)
        ]
        self._leased = leased
        self._open: set[int] = set() if leased else set(range(1, len(self._binds) + 1))
        self._submitters: list[Bind] = []
        self._capacity = 0
        self._count_open()

    def _count_open(self) -> None:
        self._submitters = [b for n, b in enumerate(self._binds, start=1) if n in self._open and b.config.submits]
        self._capacity = self.policy.queue_windows * sum(b.config.window for b in self._submitters)

    @property
    def binds(self) -> tuple[Bind, ...]:
        return tuple(self._binds)

    @property
    def queued(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        self._running = True
        for n, bind in enumerate(self._binds, start=1):
            if n in self._open:
                bind.start()

    @property
    def open_binds(self) -> frozenset[int]:
        return frozenset(self._open)

    def open_bind(self, n: int) -> None:
        """Open bind ``n`` (1-based): this instance now holds its slot."""
        if n in self._open:
            return
        self._open.add(n)
        self._count_open()
        if self._running:
            self._binds[n - 1].start()

    def close_bind(self, n: int, drain_timeout_s: float, *, abort: bool = False) -> Deferred[StopReport | None]:
        """Close bind ``n`` (gracefully, or at once with ``abort``); fires once it is closed.

        When it was the last open bind, the queue has nobody left to send it: the
        Deferred fires with what was queued (for the pipeline to requeue), else with None.
        """
        self._open.discard(n)
        self._count_open()
        bind = self._binds[n - 1]
        done = bind.abort() if abort else bind.stop(drain_timeout_s)
        return done.addCallback(lambda _: None if self._open else self._unfinished())

    def stop(self, drain_timeout_s: float) -> Deferred[StopReport]:
        """Stop taking segments, let in-flight answers arrive (bounded), unbind, close.

        Fires with the segments that got no outcome; the link forgets them, the
        pipeline resends them from its store on the next start.
        """
        self._running = False
        stopping = [bind.stop(drain_timeout_s) for bind in self._binds]
        done: Deferred[list[None]] = gatherResults(stopping, consumeErrors=True)
        return done.addCallback(lambda _: self._unfinished())

    def _unfinished(self) -> StopReport:
        entries = self._queue.take_all()
        report = StopReport(tuple(e.segment.segment_id for e in entries),
                            tuple(e.segment.segment_id for e in entries if e.maybe_sent))
        self._log.info("link.stopped", unfinished=len(report.unfinished),
                       maybe_sent=len(report.maybe_sent))
        return report

    def enqueue(self, segments: Iterable[OutboundSegment]) -> None:
        """Queue segments behind those already queued; never refuses (see :meth:`room`)."""
        if self._queue.push(segments) and self._running:
            self._pump()

    def room(self) -> int:
        """How many more segments the link wants: a few windows' worth in total."""
        if not self._running:
            return 0
        return max(0, self._capacity - len(self._queue))

    def snapshot(self) -> list[BindStatus]:
        """Binds this instance has open, or is still closing."""
        queued = len(self._queue)
        return [bind.status(queued) for n, bind in enumerate(self._binds, start=1)
                if n in self._open or bind.state not in (BindState.IDLE, BindState.STOPPED)]

    def _pump(self) -> None:
        """Offer the queue to every submitting bind, starting with a different one each time."""
        submitters = self._submitters
        count = len(submitters)
        if not count:
            return
        start = self._turn = (self._turn + 1) % count
        for i in range(count):
            if not self._queue:
                return
            submitters[(start + i) % count].pump()

    def _deliver_outcomes(self, outcomes: list[SubmitOutcome]) -> None:
        try:
            self._on_outcomes(outcomes)
        except Exception:
            self._log.exception("link.on_outcomes_failed", count=len(outcomes),
                                segment_ids=[o.segment.segment_id for o in outcomes])
