"""``smpp-bridge run``: wires store, carrier links, intake API, receipts, MO and pushes.

The only module (with the CLI) that imports the global reactor. On start it resumes
from the store: dispatched-but-unanswered segments are resent, pending pushes go out.
On SIGTERM/SIGINT: intake answers 503, in-flight submits drain (bounded), binds
unbind, the store is flushed.

Every instance is a cluster member (:mod:`bridge.cluster`): it opens the binds whose
slots it holds, and runs the once-per-cluster jobs (expiry, held release, MO expiry,
pruning) only while it leads. On SQLite the one process is the whole cluster.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import signal
import sys
from typing import Any

import structlog
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ReactorNotRunning
from twisted.internet.task import LoopingCall

from bridge.api import ApiState, build_site, capped
from bridge.cluster.binds import SlotKeeper
from bridge.cluster.membership import Membership
from bridge.cluster.status import ClusterStatus, binds_json
from bridge.cluster.timing import ClusterTiming, node_name
from bridge.cluster.workers import die_with_parent, listen_shared
from bridge.config import BridgeConfig, CarrierConfig
from bridge.dispatcher import Dispatcher
from bridge.finaliser import Finaliser
from bridge.gauges import StoreGauges
from bridge.inbound import InboundHandler
from bridge.intake import IntakeService
from bridge.logs import configure_logging
from bridge.matching import ReceiptMatcher
from bridge.metrics import MetricsSources, StoreWork, render_metrics
from bridge.mo import MoHandler
from bridge.models import InboundMessage
from bridge.openapi import openapi_document
from bridge.outbox import Pusher
from bridge.receipts import StatusMap
from bridge.retention import Pruner
from bridge.routing import Router
from bridge.rules import SendingWindow
from bridge.smpp.codec import Pdu
from bridge.smpp.config import BindConfig
from bridge.smpp.link import CarrierLink
from bridge.store import open_store
from bridge.store.records import ClusterView
from bridge.webhooks import WebhookKeys
from carriers.profiles import load_profiles

__all__ = ["Daemon", "run_daemon"]

log = structlog.get_logger("daemon")

DRAIN_TIMEOUT_S = 5.0


def bind_configs(carrier: CarrierConfig, host: str, port: int) -> list[BindConfig]:
    out = []
    for spec in carrier.binds:
        for _ in range(spec.count):
            out.append(BindConfig(
                carrier=carrier.id, host=host, port=port, system_id=carrier.system_id,
                password=carrier.password, system_type=carrier.system_type, bind_type=spec.type,
                window=carrier.window, response_timeout_s=carrier.response_timeout_s,
                enquire_link_s=carrier.enquire_link_s, tps=carrier.tps, tls=carrier.tls,
                tls_ca_file=carrier.tls_ca_file,
            ))
    return out


class Daemon:
    """Every long-lived component of a running bridge."""

    def __init__(self, config: BridgeConfig, reactor: Any, *, node: str | None = None,
                 shared_port: int | None = None) -> None:
        """``shared_port``: a ``--workers`` worker listens there with its siblings (SO_REUSEPORT)."""
        self.config = config
        self.reactor = reactor
        self.node = node or node_name(config.cluster)
        self._shared_port = shared_port
        self.simulator: Any = None
        self.api_port: Any = None
        self._timers: list[LoopingCall] = []
        self._stopping = False

    # -- start --------------------------------------------------------------------------

    def start(self) -> Deferred[dict[str, Any]]:
        """Open the store, wire the pipeline, resume, listen; fires with the ready line."""
        return Deferred.fromCoroutine(self._start())

    async def _start(self) -> dict[str, Any]:
        cfg, reactor = self.config, self.reactor
        now = reactor.seconds
        self.store = store = open_store(cfg.store, reactor=reactor, daemon=True, node=self.node,
                                        failover_s=cfg.cluster.failover_s)
        targets = {cid: (c.host, c.port) for cid, c in cfg.carriers.items()}
        if cfg.simulator.embedded:
            targets = self._start_simulator()
        profiles, numbering = load_profiles()
        self.router = Router(profiles, numbering, cfg.routing_overrides)
        status_map = StatusMap.load()
        self.pusher = Pusher(store, cfg.callbacks, reactor=reactor, keys=WebhookKeys.from_config(cfg))
        self.finaliser = Finaliser(store, now=now, receipt_timeout_s=cfg.rules.receipt_timeout_s,
                                   on_report=self.pusher.offer)
        self.matcher = ReceiptMatcher(store, self.finaliser, status_map, profiles, now=now)
        self.dispatcher = Dispatcher(store, self.finaliser, self.matcher, dict(profiles),
                                     reactor=reactor, now=now)
        self.mo = MoHandler(cfg, store, now=now, on_push=self._wake_pusher)
        self.inbound = InboundHandler(store, self.matcher, self.mo)
        links: dict[str, CarrierLink] = {}
        for cid, carrier in cfg.carriers.items():
            if not carrier.enabled:
                continue
            host, port = targets[cid]
            links[cid] = link = CarrierLink(cid, bind_configs(carrier, host, port), reactor=reactor, leased=True,
                                            on_outcomes=self.dispatcher.on_outcomes, on_deliver=self._on_deliver)
            self.dispatcher.add_link(cid, link)
        timing = ClusterTiming(cfg.cluster.failover_s)
        self.slots = SlotKeeper(self.node, links, timing, clock=reactor, release=self._release_slots,
                                requeue=self.dispatcher.requeue_unfinished)
        self.cluster_status = ClusterStatus(store.cluster, self.node, own_binds=self.dispatcher.bind_status,
                                            live_after=lambda: self.membership.live_after())
        self.membership = Membership(store.cluster, self.node, timing,
                                     {cid: len(link.binds) for cid, link in links.items()},
                                     clock=reactor, api=self._api_address,
                                     binds=lambda: binds_json(self.dispatcher.bind_status()),
                                     on_view=self._cluster_seen)
        self.intake = IntakeService(cfg, store, self.router, self.finaliser, clock_now=now,
                                    on_queued=self.dispatcher.kick)
        self.gauges = StoreGauges(store)
        self.pruner = Pruner(store, cfg.store.retention_days, clock=reactor, now=now)
        self.api_state = ApiState(
            binds=self.cluster_status.binds, health=self._health, after_replay=self._wake_pusher,
            metrics=render_metrics(self._metric_sources()),
            openapi=lambda: openapi_document(cfg),
            finalised=lambda: dict(self.finaliser.finalised), gauges=lambda: self.gauges,
        )
        # Resume: held messages wait for the quiet hours in force now; parts are counted.
        window = SendingWindow(cfg.rules.quiet_start_min, cfg.rules.quiet_end_min, cfg.rules.utc_offset_hours)
        moved = await store.messages.reschedule_held(window.release_at(now()) or now())
        if moved:
            log.info("held.rescheduled", messages=moved)
        await self.mo.start()
        await self.finaliser.repair()
        await self.membership.join()
        # What this member dispatched in a previous run, or members now dead did: resent, flagged.
        resent = await store.cluster.requeue_orphans(self.membership.live_after(), own=self.node)
        if resent:
            log.warning("dispatch.resend_after_restart", segments=resent)
        await self.dispatcher.start(resend_dispatched=False)
        await store.durable()
        self.membership.startService()
        site = build_site(cfg, store, self.intake, self.api_state)
        if self._shared_port is not None:
            self.api_port = listen_shared(reactor, capped(site, cfg), cfg.api.host, self._shared_port)
        else:
            self.api_port = reactor.listenTCP(cfg.api.port, capped(site, cfg), interface=cfg.api.host)
        self.pusher.start()
        self.gauges.start(reactor)
        lead = self._when_leading
        self._every(lead(self.pruner.prune_once), 10.0)
        self._every(lead(self._requeue_dead), timing.heartbeat_s)
        self._every(lead(self.finaliser.expire_overdue), min(60.0, max(0.05, cfg.rules.receipt_timeout_s / 10)))
        self._every(lead(self._release_held), 1.0)
        self._every(self.matcher.sweep, 1.0)
        self._every(self.pusher.wake, 1.0)   # picks up pushes queued by operator tools
        self._every(lead(self.mo.expire_stale), min(30.0, max(0.05, cfg.rules.mo_reassembly_ttl_s / 10)))
        ready = {"event": "ready", "api": self.api_port.getHost().port, "db": store.description,
                 "backend": cfg.store.backend, "node": self.node}
        if self.simulator is not None:
            ready["sim"] = dict(self.simulator.ports)
            ready["control"] = self.simulator.control_port
        log.info("daemon.started", **{k: v for k, v in ready.items() if k != "event"})
        return ready

    def _on_deliver(self, carrier: str, bind_id: str, pdu: Pdu) -> Deferred[int]:
        """The protocol boundary: only a protocol-neutral record goes past the link."""
        return self.inbound.on_deliver(carrier, bind_id, InboundMessage.from_fields(pdu.fields))

    def _start_simulator(self) -> dict[str, tuple[str, int]]:
        from carriers.sim.config import load_config as load_sim_config
        from carriers.sim.service import start_simulator

        sim_cfg = load_sim_config(self.config.simulator.config_path)
        if not self.config.simulator.use_profile_ports:
            sim_cfg = dataclasses.replace(sim_cfg, carriers=tuple(
                dataclasses.replace(c, port=0) for c in sim_cfg.carriers))
        sim_cfg = dataclasses.replace(sim_cfg, control_port=self.config.simulator.control_port)
        self.simulator = start_simulator(sim_cfg, self.reactor)
        return {cid: ("127.0.0.1", port) for cid, port in self.simulator.ports.items()}

    def _every(self, fn: Any, interval: float) -> None:
        """Run ``fn`` every ``interval`` seconds; a pass that returns a Deferred finishes first."""
        loop = LoopingCall(fn)
        loop.clock = self.reactor
        name = getattr(fn, "__name__", "?")

        def failed(failure: Any) -> None:
            log.error("daemon.timer_failed", timer=name, error=str(failure.value))
            if not self._stopping:
                self._every(fn, interval)   # keep the periodic work alive after a failure
        loop.start(interval, now=False).addErrback(failed)
        self._timers.append(loop)

    # -- periodic work ------------------------------------------------------------------

    def _when_leading(self, fn: Any) -> Any:
        """``fn`` as a once-per-cluster job: it runs only on the member that leads now."""
        def job() -> Any:
            return fn() if self.membership.is_leader else None
        job.__name__ = getattr(fn, "__name__", "job")
        return job

    def _requeue_dead(self) -> Deferred[None]:
        """The leader resends what dead members had dispatched and left unanswered."""
        def requeued(count: int) -> None:
            if count:
                log.warning("cluster.requeued_dead_members_segments", segments=count)
                self.dispatcher.kick()
        return self.store.cluster.requeue_orphans(self.membership.live_after()).addCallback(requeued)

    def _release_slots(self, slots: Any) -> Deferred[None]:
        return self.store.cluster.release(self.node, slots)

    def _api_address(self) -> str:
        if self.api_port is None:
            return ""
        host = self.api_port.getHost()
        return f"{host.host}:{host.port}"

    def _cluster_seen(self, view: ClusterView) -> None:
        self.slots.apply(view)
        self.cluster_status.seen(view)

    def _release_held(self) -> Deferred[None]:
        def released(ids: list[str]) -> None:
            if ids:
                log.info("held.released", messages=len(ids))
                self.dispatcher.kick()
        return self.store.messages.release_held(self.reactor.seconds()).addCallback(released)

    def _wake_pusher(self) -> None:
        self.store.durable().addCallback(lambda _: self.pusher.wake())

    # -- introspection ------------------------------------------------------------------

    def _health(self) -> dict[str, Any]:
        binds = self.dispatcher.bind_status()
        bound = sum(1 for b in binds if b.state.lower().startswith("bound"))
        return {"binds": len(binds), "bound": bound, **self.cluster_status.health()}

    def _metric_sources(self) -> MetricsSources:
        return MetricsSources(
            accepted=lambda: self.intake.accepted,
            submitted=lambda: self.dispatcher.submitted,
            submit_failed=lambda: self.dispatcher.failed,
            finalised=lambda: dict(self.finaliser.finalised),
            receipts=lambda: dict(self.inbound.receipts),
            mo=lambda: self.inbound.mo_count,
            pushes=lambda: dict(self.gauges.pushes),
            binds=self.dispatcher.bind_status,
            store_work=lambda: StoreWork(self.store.commits, self.store.commit_seconds, self.store.statements),
            backlog=lambda: dict(self.gauges.segments),
        )

    # -- stop ---------------------------------------------------------------------------

    def stop(self) -> Deferred[None]:
        log.info("daemon.stopping")
        self._stopping = True
        self.api_state.accepting = False
        for loop in self._timers:
            if loop.running:
                loop.stop()
        self.gauges.stop()
        self.slots.stop()
        self.membership.stop_claiming()   # still renewing: the binds close before the leases go
        d = self.dispatcher.stop(DRAIN_TIMEOUT_S)
        d.addBoth(lambda _: self.slots.closed())
        d.addBoth(lambda _: self.pusher.stop())
        d.addBoth(lambda _: self.membership.stopService())   # after the pushes: it releases their claims
        d.addBoth(lambda _: self.api_port.stopListening() if self.api_port else None)
        d.addBoth(lambda _: self.simulator.stop() if self.simulator is not None else succeed(None))
        d.addBoth(lambda _: self.store.close())
        d.addBoth(lambda _: log.info("daemon.stopped"))
        return d


YOUNG_GC_THRESHOLD = 20_000   # net container allocations between young collections (Python: 700)


def _tune_collector() -> None:
    """Take what start-up built out of the collector's sight, and collect the young less often.

    Frozen: modules, classes, config and caches, which a full collection otherwise walks
    again each time, a pause of up to 70 ms in the middle of traffic (gc.callbacks under
    tools/bench.py). Less often: the pipeline's objects nearly all die by reference
    counting, yet a young pass every 700 allocations cost 3-4% of the CPU (864 passes,
    334 ms in a 15,000-message run); at 20,000 it is a handful. Cycles still get found.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_GC_THRESHOLD, middle, old)


def run_daemon(config: BridgeConfig, *, node: str | None = None, shared_port: int | None = None) -> int:
    configure_logging(config.logging.level, config.logging.format, config.logging.redact, channels=config.channels)
    from bridge.reactor import install

    reactor = install()

    if shared_port is not None:   # a --workers worker: it must not outlive its supervisor
        die_with_parent()
    daemon = Daemon(config, reactor, node=node, shared_port=shared_port)
    if node or config.cluster.node:   # a named member: every line says which (set once, process-wide)
        structlog.contextvars.bind_contextvars(node=daemon.node)
    exit_code = [0]

    def started(ready: dict[str, Any]) -> None:
        _tune_collector()
        print(json.dumps(ready), flush=True)
        reactor.addSystemEventTrigger("before", "shutdown", daemon.stop)

    def failed(failure: Any) -> None:   # a port in use, an unreadable store: one line, exit 1
        print(f"smpp-bridge: cannot start: {failure.value}", file=sys.stderr)
        log.error("daemon.start_failed", error=str(failure.value), error_type=failure.type.__name__)
        exit_code[0] = 1
        _stop_once()

    def start() -> None:
        daemon.start().addCallbacks(started, failed)

    def on_signal(signum: int, _frame: object) -> None:
        # Our own handlers: Twisted skips SIGINT when it starts out ignored (e.g. a daemon
        # launched in the background by a shell), and Ctrl-C must always stop cleanly.
        log.info("daemon.signal", signal=signal.Signals(signum).name)
        reactor.callFromThread(_stop_once)

    def _stop_once() -> None:
        with contextlib.suppress(ReactorNotRunning):   # a second Ctrl-C while stopping
            reactor.stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    reactor.callWhenRunning(start)
    reactor.run(installSignalHandlers=False)
    return exit_code[0]

