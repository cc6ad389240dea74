"""``smpp-bridge run --workers N``: N cluster members on one machine behind one API port.

Why processes: one Python process uses one core; N members on one PostgreSQL are one
bridge (see :mod:`bridge.cluster`), so N processes use N cores. Why SO_REUSEPORT:
every worker listens on the same port with its own socket and the kernel spreads the
connections; the parent only holds the port (bound, never listening) so that port 0
means one port for all. Twisted's ``ProcessMonitor`` restarts a worker that dies; the
restarted worker has the same member name, so it resends what it had in flight.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import socket
import sys
from collections.abc import Callable
from typing import Any

import structlog
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger, formatEvent

from bridge.config import BridgeConfig

__all__ = ["WorkersError", "listen_shared", "run_workers", "worker_names"]

log = structlog.get_logger("workers")

#: Seconds a worker gets to drain and unbind after SIGTERM before it is killed.
STOP_GRACE_S = 15.0


class WorkersError(ValueError):
    """``--workers`` cannot run with this config (one line for the operator)."""


def worker_names(config: BridgeConfig, count: int) -> list[str]:
    """Member names base-1..base-N; the base is ``[cluster] node`` or host name + this pid."""
    base = config.cluster.node or f"{socket.gethostname()}-{os.getpid()}"
    return [f"{base}-{i}" for i in range(1, count + 1)]


def check_workers(config: BridgeConfig, count: int) -> None:
    if count < 1:
        raise WorkersError("--workers: expected at least 1")
    if not config.store.url:
        raise WorkersError("--workers needs a PostgreSQL store ([store] url): an SQLite store is one process")
    if config.simulator.embedded:
        raise WorkersError("--workers: run the simulator on its own (smsc-sim run), not embedded")


def _reuse_port_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def listen_shared(reactor: Any, factory: Any, host: str, port: int, backlog: int = 128) -> Any:
    """A worker's API listener on a port its siblings listen on too (SO_REUSEPORT)."""
    sock = _reuse_port_socket(host, port)
    sock.listen(backlog)
    sock.setblocking(False)
    try:
        return reactor.adoptStreamPort(sock.fileno(), sock.family, factory)
    finally:
        sock.close()   # the reactor holds its own duplicate of the descriptor


def die_with_parent() -> None:
    """A worker stops (SIGTERM: drain, unbind) when its supervisor dies, even by kill -9."""
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG


class _Relay:
    """The workers' output: their log lines go to our stderr as they are; their ready
    lines are collected, and once every worker is ready ours is printed."""

    def __init__(self, names: list[str], on_all_ready: Callable[[dict[str, Any]], None]) -> None:
        self._names = names
        self._ready: dict[str, dict[str, Any]] = {}
        self._on_all_ready = on_all_ready
        self._announced = False

    def __call__(self, event: dict[str, Any]) -> None:
        line = event.get("line")
        if line == "":
            return
        if line is None:
            print(formatEvent(event), file=sys.stderr, flush=True)
            return
        if event.get("stream") == "stdout":
            with contextlib.suppress(ValueError):
                ready = json.loads(line)
                if isinstance(ready, dict) and ready.get("event") == "ready":
                    self._ready[str(ready.get("node"))] = ready
                    if not self._announced and set(self._names) <= set(self._ready):
                        self._announced = True
                        self._on_all_ready(self._ready)
                    return
        print(line, file=sys.stderr, flush=True)


def run_workers(config: BridgeConfig, count: int) -> int:
    """Supervise ``count`` workers until SIGTERM/SIGINT; the exit status of the parent."""
    try:
        check_workers(config, count)
        holder = _reuse_port_socket(config.api.host, config.api.port)   # bound, never listening
    except (WorkersError, OSError) as exc:
        print(f"smpp-bridge: cannot start: {exc}", file=sys.stderr)
        return 1
    from twisted.internet import reactor
    from twisted.runner.procmon import ProcessMonitor

    from bridge.logs import configure_logging

    configure_logging(config.logging.level, config.logging.format, config.logging.redact,
                      channels=config.channels)
    port = holder.getsockname()[1]
    names = worker_names(config, count)

    def all_ready(ready: dict[str, dict[str, Any]]) -> None:
        first = ready[names[0]]
        print(json.dumps({"event": "ready", "api": port, "workers": count, "nodes": names,
                          "db": first.get("db"), "backend": first.get("backend")}), flush=True)
        log.info("workers.ready", workers=count, api=port)

    monitor = ProcessMonitor(reactor)   # imported here: procmon imports the global reactor
    monitor.threshold = 2
    monitor.minRestartDelay = 0.5
    monitor.maxRestartDelay = 30
    monitor.killTime = STOP_GRACE_S
    monitor.log = Logger(namespace="smpp_bridge.workers", observer=_Relay(names, all_ready))
    config_path = str(config.path.resolve())
    for name in names:
        monitor.addProcess(name, [sys.executable, "-m", "bridge.cli", "run", "--config", config_path,
                                  "--node", name, "--shared-port", str(port)],
                           env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def stop() -> Deferred[None]:
        """Before the reactor stops: TERM every worker, wait (bounded by killTime) for all."""
        log.info("workers.stopping", workers=count)
        monitor.stopService()

        def check() -> None:
            if not monitor.protocols:
                poll.stop()
        poll = LoopingCall(check)
        poll.clock = reactor
        return poll.start(0.1).addCallback(lambda _: None)

    # Twisted's own signal handling: SIGTERM/SIGINT stop the reactor, which waits for the
    # trigger; its SIGCHLD handling is what tells the monitor that a worker died.
    reactor.addSystemEventTrigger("before", "shutdown", stop)
    reactor.callWhenRunning(monitor.startService)
    reactor.run()
    holder.close()
    return 0
