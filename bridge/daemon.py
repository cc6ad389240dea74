"""``smpp-bridge run``: wires store, carrier links, intake API, receipts, MO and pushes.

The only module (with the CLI) that imports the global reactor. On start it resumes
from the store: dispatched-but-unanswered segments are resent, pending pushes go out.
On SIGTERM/SIGINT: intake answers 503, in-flight submits drain (bounded), binds
unbind, the store is flushed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import signal
import sys
from typing import Any

import structlog
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ReactorNotRunning

from bridge.api import ApiState, build_site, capped
from bridge.config import BridgeConfig, CarrierConfig
from bridge.dispatcher import Dispatcher
from bridge.finaliser import Finaliser
from bridge.inbound import InboundHandler
from bridge.intake import IntakeService
from bridge.logs import configure_logging
from bridge.metrics import MetricsSources, render_metrics
from bridge.mo import MoHandler
from bridge.openapi import openapi_document
from bridge.outbox import Pusher
from bridge.receipts import StatusMap
from bridge.routing import Router
from bridge.smpp.config import BindConfig
from bridge.smpp.link import CarrierLink
from bridge.store import Store, try_lock_store
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

    def __init__(self, config: BridgeConfig, reactor: Any) -> None:
        self.config = config
        self.reactor = reactor
        self.simulator: Any = None
        self.api_port: Any = None
        self._timers: list[Any] = []

    # -- start --------------------------------------------------------------------------

    def start(self) -> dict[str, Any]:
        cfg, reactor = self.config, self.reactor
        now = reactor.seconds
        self._lock = try_lock_store(cfg.store.path)
        if self._lock is None:
            raise RuntimeError(f"store {cfg.store.path} is in use by another smpp-bridge process")
        self.store = store = Store(cfg.store.path, clock=reactor,
                                   commit_interval_s=cfg.store.commit_interval_ms / 1000)
        store.start_background_checkpoints()
        targets = {cid: (c.host, c.port) for cid, c in cfg.carriers.items()}
        if cfg.simulator.embedded:
            targets = self._start_simulator()
        profiles, numbering = load_profiles()
        self.router = Router(profiles, numbering, cfg.routing_overrides)
        status_map = StatusMap.load()
        self.finaliser = Finaliser(store, now=now)
        self.pusher = Pusher(store, cfg.callbacks, reactor=reactor)
        self.dispatcher = Dispatcher(store, self.finaliser, {c: p for c, p in profiles.items()},
                                     reactor=reactor, now=now, on_change=self._wake_pusher)
        self.mo = MoHandler(cfg, store, now=now, on_push=self._wake_pusher)
        self.inbound = InboundHandler(store, self.finaliser, self.dispatcher, status_map, profiles, self.mo,
                                      now=now, on_change=self._wake_pusher)
        for cid, carrier in cfg.carriers.items():
            if not carrier.enabled:
                continue
            host, port = targets[cid]
            link = CarrierLink(cid, bind_configs(carrier, host, port), reactor=reactor,
                               on_outcomes=self.dispatcher.on_outcomes, on_deliver=self.inbound.on_deliver)
            self.dispatcher.add_link(cid, link)
        self.intake = IntakeService(cfg, store, self.router, clock_now=now)
        self.api_state = ApiState(
            binds=self.dispatcher.bind_status, health=self._health, after_accept=self._after_accept,
            metrics=render_metrics(self._metric_sources()),
            openapi=lambda: openapi_document(cfg),
        )
        site = build_site(cfg, store, self.intake, self.finaliser, self.api_state)
        self.api_port = reactor.listenTCP(cfg.api.port, capped(site, cfg), interface=cfg.api.host)
        self.dispatcher.start()
        self.pusher.start()
        self._every(self._expire_overdue, min(60.0, max(0.05, cfg.rules.receipt_timeout_s / 10)))
        self._every(self._release_held, 1.0)
        self._every(self.pusher.wake, 1.0)   # picks up pushes queued by operator tools
        self._every(self.mo.expire_stale, min(30.0, max(0.05, cfg.rules.mo_reassembly_ttl_s / 10)))
        ready = {"event": "ready", "api": self.api_port.getHost().port, "db": str(cfg.store.path)}
        if self.simulator is not None:
            ready["sim"] = dict(self.simulator.ports)
            ready["control"] = self.simulator.control_port
        log.info("daemon.started", **{k: v for k, v in ready.items() if k != "event"})
        return ready

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
        def run() -> None:
            try:
                fn()
            except Exception:
                log.exception("daemon.timer_failed", timer=getattr(fn, "__name__", "?"))
            self._timers.append(self.reactor.callLater(interval, run))
            if len(self._timers) > 32:
                self._timers = [t for t in self._timers if t.active()]

        self._timers.append(self.reactor.callLater(interval, run))

    # -- periodic work ------------------------------------------------------------------

    def _expire_overdue(self) -> None:
        """No receipt within receipt_timeout_s: the platform records EXPIRED itself."""
        cutoff = self.reactor.seconds() - self.config.rules.receipt_timeout_s
        ids = self.store.overdue_segments(cutoff)
        for segment_id in ids:
            self.finaliser.segment_final(segment_id, "EXPIRED", "SC:NORECEIPT")
        if ids:
            log.info("receipts.expired", segments=len(ids))
            self._wake_pusher()

    def _release_held(self) -> None:
        released = self.store.release_held(self.reactor.seconds())
        if released:
            log.info("held.released", messages=len(released))
            self.dispatcher.kick()

    def _after_accept(self) -> None:
        self.dispatcher.kick()
        self.pusher.wake()

    def _wake_pusher(self) -> None:
        self.store.durable().addCallback(lambda _: self.pusher.wake())

    # -- introspection ------------------------------------------------------------------

    def _health(self) -> dict[str, Any]:
        binds = self.dispatcher.bind_status()
        bound = sum(1 for b in binds if b.state.lower().startswith("bound"))
        return {"binds": len(binds), "bound": bound}

    def _metric_sources(self) -> MetricsSources:
        return MetricsSources(
            accepted=lambda: self.intake.accepted,
            submitted=lambda: self.dispatcher.submitted,
            submit_failed=lambda: self.dispatcher.failed,
            finalised=lambda: dict(self.finaliser.finalised),
            receipts=lambda: dict(self.inbound.receipts),
            mo=lambda: self.inbound.mo_count,
            pushes=self.store.outbox_counts,
            binds=self.dispatcher.bind_status,
            store_commits=lambda: (self.store.commits, self.store.commit_seconds),
            backlog=self.store.segment_counts,
        )

    # -- stop ---------------------------------------------------------------------------

    def stop(self) -> Deferred[None]:
        log.info("daemon.stopping")
        self.api_state.accepting = False
        for t in self._timers:
            if t.active():
                t.cancel()
        d = self.dispatcher.stop(DRAIN_TIMEOUT_S)
        d.addBoth(lambda _: self.pusher.stop())
        d.addBoth(lambda _: self.api_port.stopListening() if self.api_port else None)
        d.addBoth(lambda _: self.simulator.stop() if self.simulator is not None else succeed(None))
        d.addBoth(lambda _: self.store.close())
        d.addBoth(lambda _: log.info("daemon.stopped"))
        return d


def run_daemon(config: BridgeConfig) -> int:
    configure_logging(config.logging.level, config.logging.format, config.logging.redact)
    from twisted.internet import reactor

    daemon = Daemon(config, reactor)
    exit_code = [0]

    def start() -> None:
        try:
            ready = daemon.start()
        except Exception as exc:  # a port in use, an unreadable store: one line, exit 1
            print(f"smpp-bridge: cannot start: {exc}", file=sys.stderr)
            log.exception("daemon.start_failed")
            exit_code[0] = 1
            reactor.stop()
            return
        print(json.dumps(ready), flush=True)
        reactor.addSystemEventTrigger("before", "shutdown", daemon.stop)

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

