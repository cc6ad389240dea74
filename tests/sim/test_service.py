"""Embedding the simulator in a reactor: listeners, ports, stop."""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock

from carriers.sim.service import start_simulator

from .helpers import FakeEsme, build_config


def _fired(d) -> bool:
    box: list = []
    d.addBoth(box.append)
    return bool(box)


def test_listens_on_every_carrier_and_control(tmp_path):
    """start_simulator listens on five SMPP ports and the control port, on the configured hosts."""
    reactor = MemoryReactorClock()
    running = start_simulator(build_config(tmp_path), reactor)
    assert [(port, host) for port, _, _, host in reactor.tcpServers] == [
        (2775, "127.0.0.1"), (2776, "127.0.0.1"), (2777, "127.0.0.1"), (2778, "127.0.0.1"),
        (2779, "127.0.0.1"), (8471, "127.0.0.1")]
    assert dict(running.ports) == {"cmcc": 2775, "cucc": 2776, "ctcc": 2777, "cbn": 2778, "intl": 2779}
    assert running.ready_event() == {"event": "ready", "ports": dict(running.ports), "control": 8471}


def test_stop_unbinds_then_finishes(tmp_path):
    """stop() unbinds bound sessions and fires once they are gone or the grace time is over."""
    reactor = MemoryReactorClock()
    running = start_simulator(build_config(tmp_path), reactor)
    esme = FakeEsme(running.simulator, "cmcc")
    esme.bind()
    d = running.stop(grace_s=1.0)
    assert [p.command for p in esme.received()] == ["unbind"]
    assert not _fired(d)
    reactor.advance(1.1)
    assert _fired(d)
    assert esme.transport.disconnecting
