"""Put the simulator on the network: five SMPP listeners and the control API.

``start_simulator`` listens synchronously (port 0 picks a free port) and returns
the bound ports, so the bridge daemon can embed the simulator in its own reactor
and tests can start it without guessing ports.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import structlog
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IListeningPort
from twisted.web.server import Site

from carriers.sim.config import CarrierSimConfig, SimConfig, load_config
from carriers.sim.control import ControlResource
from carriers.sim.simulator import Simulator

__all__ = ["RunningSimulator", "start_simulator"]

log = structlog.get_logger("carriers.sim.service")


class _QuietSite(Site):
    """No access log: the control API is polled by tests and would flood it."""

    noisy = False

    def log(self, request: Any) -> None:
        pass


class RunningSimulator:
    """A started simulator: its ports, its state, and how to stop it."""

    def __init__(self, simulator: Simulator, reactor: Any, listeners: Mapping[str, IListeningPort],
                 control: IListeningPort) -> None:
        self.simulator = simulator
        self._reactor = reactor
        self._listeners = dict(listeners)
        self._control = control
        self.ports: Mapping[str, int] = MappingProxyType(
            {cid: p.getHost().port for cid, p in listeners.items()})
        self.control_port: int = control.getHost().port
        self._stopping: Deferred[None] | None = None

    def ready_event(self) -> dict[str, object]:
        """The one JSON line ``smsc-sim run`` prints when it is ready."""
        return {"event": "ready", "ports": dict(self.ports), "control": self.control_port}

    def stop(self, grace_s: float = 2.0) -> Deferred[None]:
        """Stop listening, unbind every session, close what is left after ``grace_s``."""
        if self._stopping is not None:
            return self._stopping
        listening = [d for d in (p.stopListening() for p in [*self._listeners.values(), self._control])
                     if isinstance(d, Deferred)]
        for carrier in self.simulator.carriers.values():
            carrier.unbind_all()
        done: Deferred[None] = Deferred()
        deadline = self._reactor.seconds() + grace_s

        def check() -> None:
            sessions = [s for c in self.simulator.carriers.values() for s in c.sessions]
            if not sessions:
                done.callback(None)
            elif self._reactor.seconds() >= deadline:
                for s in sessions:
                    s.transport.abortConnection()
                done.callback(None)
            else:
                self._reactor.callLater(0.02, check)

        check()
        self._stopping = DeferredList([*listening, done]).addCallback(lambda _: None)
        self._stopping.addCallback(lambda _: log.info("sim.stopped"))
        return self._stopping


def _tls_options(config: CarrierSimConfig) -> Any:
    """Server TLS context from the carrier's PEM certificate and key."""
    from pathlib import Path

    from twisted.internet.ssl import PrivateCertificate

    cert = Path(config.tls_cert_file or "").read_bytes()
    key = Path(config.tls_key_file or config.tls_cert_file or "").read_bytes()
    return PrivateCertificate.loadPEM(cert + b"\n" + key).options()


def start_simulator(config: SimConfig | None = None, reactor: Any = None) -> RunningSimulator:
    """Listen on every carrier port and the control port; raise ``CannotListenError``."""
    if reactor is None:
        from twisted.internet import reactor as global_reactor
        reactor = global_reactor
    config = config or load_config()
    simulator = Simulator(config, reactor)
    listeners: dict[str, IListeningPort] = {}
    try:
        for carrier_config in config.carriers:
            factory = simulator.carriers[carrier_config.id]
            factory.noisy = False
            if carrier_config.tls_cert_file:
                listeners[carrier_config.id] = reactor.listenSSL(
                    carrier_config.port, factory, _tls_options(carrier_config), interface=carrier_config.host)
            else:
                listeners[carrier_config.id] = reactor.listenTCP(
                    carrier_config.port, factory, interface=carrier_config.host)
        control = reactor.listenTCP(config.control_port, _QuietSite(ControlResource(simulator)),
                                    interface=config.control_host)
    except Exception:
        for port in listeners.values():
            port.stopListening()
        raise
    running = RunningSimulator(simulator, reactor, listeners, control)
    log.info("sim.started", ports=dict(running.ports), control=running.control_port)
    return running
