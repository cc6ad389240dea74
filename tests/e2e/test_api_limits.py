"""The API's read deadlines, idle timeout and connection cap, on real sockets.

The site is the daemon's own (``build_site`` + ``capped``) listening on 127.0.0.1 port 0
in this process; clients are plain blocking-free sockets, and the test spins the
reactor until a condition holds or a deadline passes (no sleeps as synchronisation).
The routes used (``/healthz``) touch neither the store nor the intake.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs
from twisted.internet import reactor

from bridge.api import ApiState, build_site, capped
from bridge.apiguard import ConnectionCap
from bridge.config import load_config
from tests.binds.simharness import spin_until

pytestmark = pytest.mark.timeout(60)

CONFIG = """
[api]
port = 0
header_timeout_s = {header}
body_timeout_s = {body}
idle_timeout_s = {idle}
max_connections = {cap}

[[apps]]
id = "a"
token = "t"
"""

HEALTH = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


class Server:
    def __init__(self, tmp_path: Path, header: float = 0.5, body: float = 0.5, idle: float = 30.0,
                 cap: int = 100) -> None:
        path = tmp_path / "api.toml"
        path.write_text(CONFIG.format(header=header, body=body, idle=idle, cap=cap), encoding="utf-8")
        cfg = load_config(path)
        site = build_site(cfg, None, None, ApiState())  # type: ignore[arg-type]
        self.factory: ConnectionCap = capped(site, cfg)
        self.port: Any = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.clients: list[socket.socket] = []

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port.getHost().port))
        sock.setblocking(False)
        self.clients.append(sock)
        return sock

    def close(self) -> None:
        for sock in self.clients:
            sock.close()
        self.port.stopListening()
        spin_until(lambda: self.factory.open == 0, 10, "server connections closed")


@pytest.fixture(name="make_server")
def _make_server(tmp_path: Path) -> Iterator[Any]:
    made: list[Server] = []

    def make(**kw: Any) -> Server:
        server = Server(tmp_path, **kw)
        made.append(server)
        return server

    yield make
    for server in made:
        server.close()


def _read(sock: socket.socket) -> bytes | None:
    """What the server sent so far; b"" once it closed, None if nothing yet."""
    try:
        return sock.recv(65536)
    except BlockingIOError:
        return None
    except ConnectionResetError:
        return b""


class Conn:
    """Accumulates what one client socket receives until the server closes it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.data = b""
        self.closed = False

    def poll(self) -> bool:
        while not self.closed:
            chunk = _read(self.sock)
            if chunk is None:
                break
            if chunk == b"":
                self.closed = True
            self.data += chunk
        return self.closed


def _trickle(conn: Conn, payload: bytes, every_s: float, until_s: float) -> float:
    """Send ``payload`` one byte per ``every_s`` until the server closes; seconds it took."""
    start = time.monotonic()
    sent = 0
    next_at = start
    while not conn.poll():
        now = time.monotonic()
        if now - start > until_s:
            raise AssertionError(f"connection still open after {until_s} s")
        if now >= next_at and sent < len(payload):
            try:
                conn.sock.send(payload[sent:sent + 1])
            except (BrokenPipeError, ConnectionResetError):
                conn.closed = True
                break
            sent += 1
            next_at = now + every_s
        reactor.iterate(0.01)
    return time.monotonic() - start


class TestDeadlines:
    def test_slow_header_sender_is_cut_off(self, make_server: Any) -> None:
        """A header byte every 0.1 s resets the idle timeout, not the 0.5 s header deadline: 408, closed."""
        server = make_server(header=0.5, idle=30.0)
        slow = Conn(server.connect())
        took = _trickle(slow, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: y\r\n" * 100, 0.1, 10.0)
        assert 0.4 < took < 5.0
        assert slow.data.startswith(b"HTTP/1.1 408")

    def test_slow_body_is_cut_off(self, make_server: Any) -> None:
        """Headers in time, then a body byte every 0.1 s: cut after the body deadline."""
        server = make_server(header=5.0, body=0.5, idle=30.0)
        slow = Conn(server.connect())
        slow.sock.send(b"POST /v1/sms HTTP/1.1\r\nHost: x\r\nContent-Length: 200\r\n\r\n")
        took = _trickle(slow, b"{" * 200, 0.1, 10.0)
        assert 0.4 < took < 5.0
        assert slow.data.startswith(b"HTTP/1.1 408")

    def test_bare_connection_is_closed(self, make_server: Any) -> None:
        """A connection that never sends a byte is closed after the header deadline, not kept."""
        server = make_server(header=0.5, idle=30.0)
        bare = Conn(server.connect())
        spin_until(bare.poll, 5.0, "bare connection closed")

    def test_prompt_requests_and_keep_alive_are_served(self, make_server: Any) -> None:
        """Requests sent at once are answered, several on one connection, each with its own deadline."""
        server = make_server(header=0.5, idle=30.0)
        conn = Conn(server.connect())
        for _ in range(3):
            conn.data = b""
            conn.sock.send(HEALTH)
            spin_until(lambda: conn.poll() or b'"status"' in conn.data, 5.0, "health answer")
            assert conn.data.startswith(b"HTTP/1.1 200") and not conn.closed
            deadline = time.monotonic() + 0.8  # longer than the header deadline, between requests
            while time.monotonic() < deadline:
                reactor.iterate(0.01)

    def test_idle_keep_alive_connection_is_closed(self, make_server: Any) -> None:
        """After a response, a silent keep-alive connection is closed by the idle timeout."""
        server = make_server(header=30.0, idle=0.5)
        conn = Conn(server.connect())
        conn.sock.send(HEALTH)
        start = time.monotonic()
        spin_until(conn.poll, 10.0, "idle connection closed")
        assert conn.data.startswith(b"HTTP/1.1 200")
        assert time.monotonic() - start > 0.4


class TestConnectionCap:
    def test_connections_beyond_the_cap_are_closed_and_logged_once(self, make_server: Any) -> None:
        """With max_connections 5, the 6th-13th connections are closed at once; one log line for the burst."""
        server = make_server(header=30.0, idle=30.0, cap=5)
        with capture_logs() as logs:
            held = [Conn(server.connect()) for _ in range(5)]
            spin_until(lambda: server.factory.open == 5, 5.0, "5 connections accepted")
            extra = [Conn(server.connect()) for _ in range(8)]
            spin_until(lambda: all(c.poll() for c in extra), 5.0, "extra connections closed")
            assert server.factory.open == 5 and server.factory.refused == 8
            assert not any(c.poll() for c in held)
            reached = [e for e in logs if e["event"] == "api.connection_cap_reached"]
            assert len(reached) == 1 and reached[0]["limit"] == 5
            for c in held:
                c.sock.close()
            spin_until(lambda: any(e["event"] == "api.connection_cap_cleared" for e in logs), 5.0,
                       "cap cleared")
        cleared = [e for e in logs if e["event"] == "api.connection_cap_cleared"]
        assert cleared[0]["refused"] == 8
        again = Conn(server.connect())
        again.sock.send(HEALTH)
        spin_until(lambda: again.poll() or b'"status"' in again.data, 5.0, "served after the burst")
        assert again.data.startswith(b"HTTP/1.1 200")
