"""LeanEPollReactor: writes reach the socket before the next poll, and nothing is lost on the way.

Each test drives its own reactor instance (never the global one) with ``iterate``, over a
socketpair whose far end is a plain blocking socket read with a deadline.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from bridge.reactor import LeanEPollReactor

DEADLINE_S = 10.0


class Recorder(Protocol):
    """Keeps what it read and why its connection ended."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.lost: Failure | None = None

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted API)
        self.received += data

    def connectionLost(self, reason: Failure = ConnectionDone) -> None:  # noqa: N802 (Twisted API)
        self.lost = reason


@pytest.fixture(name="reactor")
def _reactor() -> Iterator[LeanEPollReactor]:
    reactor = LeanEPollReactor()
    yield reactor
    for selectable in reactor.removeAll():
        selectable.connectionLost(Failure(ConnectionDone()))
    reactor._poller.close()


def _adopt(reactor: LeanEPollReactor) -> tuple[Recorder, socket.socket]:
    """A Twisted connection on one end of a socketpair, and the other end as a plain socket."""
    ours, theirs = socket.socketpair()
    proto = Recorder()
    reactor.adoptStreamConnection(ours.fileno(), socket.AF_UNIX, Factory.forProtocol(lambda: proto))
    ours.close()   # adoptStreamConnection duplicated it
    theirs.settimeout(DEADLINE_S)
    return proto, theirs


def _until(reactor: LeanEPollReactor, done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not done():
        assert time.monotonic() < deadline, "condition not reached in time"
        reactor.iterate(0.01)


def _read(sock: socket.socket, size: int) -> bytes:
    got = bytearray()
    while len(got) < size:
        chunk = sock.recv(size - len(got))
        if not chunk:
            break
        got += chunk
    return bytes(got)


class CountingPoller:
    """The reactor's real epoll object, with its register/modify/unregister calls counted."""

    def __init__(self, poller: object) -> None:
        self.poller, self.changes = poller, 0

    def __getattr__(self, name: str) -> object:
        if name in ("register", "modify", "unregister"):
            self.changes += 1
        return getattr(self.poller, name)


class TestEagerWrite:
    def test_small_write_sent_in_one_iteration_without_epoll_registration(self, reactor: LeanEPollReactor) -> None:
        """A write is on the wire after one iteration, with no epoll_ctl call for it."""
        proto, theirs = _adopt(reactor)
        reactor._poller = counting = CountingPoller(reactor._poller)
        for n in range(3):
            proto.transport.write(b"hello %d" % n)
            assert proto.transport in reactor.getWriters()   # pending until the next poll
            reactor.iterate(0)
            assert _read(theirs, 7) == b"hello %d" % n
        assert counting.changes == 0   # Twisted's EPollReactor: two per write (register for EPOLLOUT, then not)
        assert reactor.getWriters() == []

    def test_write_from_timed_call_does_not_wait_for_poll_timeout(self, reactor: LeanEPollReactor) -> None:
        """A write made by a timed call goes out in that iteration, not after the poll's timeout."""
        proto, theirs = _adopt(reactor)
        reactor.callLater(0, proto.transport.write, b"ping")
        reactor.iterate(0)   # runs the call, then flushes before polling
        theirs.settimeout(0.0)
        assert theirs.recv(16) == b"ping"

    def test_write_larger_than_socket_buffer_registers_and_completes(self, reactor: LeanEPollReactor) -> None:
        """Data that does not fit waits on epoll and all of it arrives, in order."""
        proto, theirs = _adopt(reactor)
        payload = bytes(range(256)) * (16 * 1024)   # 4 MiB, far beyond a socket buffer
        proto.transport.write(payload)
        reactor.iterate(0)
        assert reactor._writes, "the rest must wait for epoll"
        got = bytearray()
        theirs.setblocking(False)
        deadline = time.monotonic() + DEADLINE_S
        while len(got) < len(payload):
            assert time.monotonic() < deadline
            try:
                got += theirs.recv(1 << 20)
            except BlockingIOError:
                reactor.iterate(0.01)
        assert bytes(got) == payload
        _until(reactor, lambda: not reactor._writes)
        assert reactor.getWriters() == []

    def test_lose_connection_after_write_delivers_then_closes(self, reactor: LeanEPollReactor) -> None:
        """loseConnection right after a write: the peer reads the data, then end of file."""
        proto, theirs = _adopt(reactor)
        proto.transport.write(b"last words")
        proto.transport.loseConnection()
        _until(reactor, lambda: proto.lost is not None)
        assert _read(theirs, 100) == b"last words"
        assert proto.lost.check(ConnectionDone)

    def test_write_to_closed_peer_loses_connection(self, reactor: LeanEPollReactor) -> None:
        """A write whose peer is gone ends the connection with a failure and leaves no writer behind."""
        proto, theirs = _adopt(reactor)
        theirs.close()
        _until(reactor, lambda: proto.lost is not None or not proto.transport.connected or _write(proto))
        _until(reactor, lambda: proto.lost is not None)
        assert reactor.getWriters() == []


def _write(proto: Recorder) -> bool:
    proto.transport.write(b"x" * 1024)
    return False


def test_daemon_modules_leave_the_reactor_to_install() -> None:
    """Importing the CLI and daemon installs no reactor, so the daemon's own gets installed."""
    code = ("import sys, bridge.cli, bridge.daemon; assert 'twisted.internet.reactor' not in sys.modules; "
            "from bridge.reactor import install, LeanEPollReactor; assert isinstance(install(), LeanEPollReactor)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
