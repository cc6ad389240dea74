"""Request deadlines of the HTTP API over an in-memory transport and a test clock."""

from __future__ import annotations

import re
from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web import http, resource, server

from bridge.apiguard import DeadlineChannel

REQUEST = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"


class _Ok(resource.Resource):
    isLeaf = True

    def render_POST(self, request: server.Request) -> bytes:  # noqa: N802 (Twisted API)
        return b"ok"


def _channel(clock: Clock) -> tuple[Any, StringTransport]:
    site = server.Site(_Ok(), timeout=None, reactor=clock)
    site.protocol = type("Channel", (DeadlineChannel,), {"header_timeout_s": 10.0, "body_timeout_s": 30.0})
    channel = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    return channel, transport


def test_keep_alive_requests_share_one_timer() -> None:
    """A thousand quick requests schedule a handful of timers, not two each."""
    clock = Clock()
    channel, transport = _channel(clock)
    made = 0
    real = clock.callLater

    def counting(*args: Any, **kw: Any) -> Any:
        nonlocal made
        made += 1
        return real(*args, **kw)
    channel.callLater = counting
    for _ in range(1000):
        channel.dataReceived(REQUEST)
        clock.advance(0.05)
    assert transport.value().count(b"HTTP/1.1 200 OK") == 1000
    assert b"408" not in transport.value() and not transport.disconnecting
    assert made <= 60 // 10 + 2   # 50 s of traffic, a 10 s header deadline


def test_headers_late_get_408_at_their_deadline() -> None:
    clock = Clock()
    channel, transport = _channel(clock)
    for _ in range(3):                      # a few fast requests first
        channel.dataReceived(REQUEST)
        clock.advance(3.0)
    transport.clear()
    channel.dataReceived(b"POST / HTTP/1.1\r\nHo")   # then one that trickles
    start = clock.seconds()
    while not transport.disconnecting and clock.seconds() - start < 60:
        clock.advance(0.5)
        channel.dataReceived(b"s")          # a byte at a time resets no deadline
    assert transport.value().startswith(b"HTTP/1.1 408")
    assert 10.0 <= clock.seconds() - start <= 10.5


def test_body_late_gets_408_after_the_body_deadline() -> None:
    clock = Clock()
    channel, transport = _channel(clock)
    clock.advance(9.0)
    channel.dataReceived(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    clock.advance(29.0)
    assert not transport.disconnecting       # past the header deadline: the body has 30 s
    clock.advance(1.0)
    assert transport.value().startswith(b"HTTP/1.1 408") and transport.disconnecting


def test_idle_connection_between_requests_is_not_timed_out_by_deadlines() -> None:
    clock = Clock()
    channel, transport = _channel(clock)
    channel.dataReceived(REQUEST)
    clock.advance(100.0)
    assert b"408" not in transport.value() and not transport.disconnecting


def test_idle_timeout_closes_a_silent_keep_alive_connection_on_the_same_timer() -> None:
    clock = Clock()
    site = server.Site(_Ok(), timeout=None, reactor=clock)
    site.protocol = type("Channel", (DeadlineChannel,), {"header_timeout_s": 10.0, "body_timeout_s": 30.0,
                                                         "idle_timeout_s": 60.0})
    channel = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    for _ in range(100):                     # busy: requests every 0.5 s never hit the idle timeout
        channel.dataReceived(REQUEST)
        clock.advance(0.5)
    assert not transport.disconnecting and len(clock.getDelayedCalls()) == 1
    clock.advance(59.0)                      # 59.5 s after the last answer
    assert not transport.disconnecting
    clock.advance(0.5)
    assert transport.disconnecting and b"408" not in transport.value()


def test_local_address_is_read_once_per_connection() -> None:
    """Every request is told the local address; the socket is asked once per connection."""
    channel, transport = _channel(Clock())
    asked = 0
    real = transport.getHost

    def counting() -> Any:
        nonlocal asked
        asked += 1
        return real()
    transport.getHost = counting
    seen = []

    class _Host(resource.Resource):
        isLeaf = True

        def render_POST(self, request: server.Request) -> bytes:  # noqa: N802 (Twisted API)
            seen.append(request.getHost())
            return b"ok"
    channel.site.resource = _Host()
    for _ in range(5):
        channel.dataReceived(REQUEST)
    assert transport.value().count(b"HTTP/1.1 200 OK") == 5
    assert asked == 1 and seen == [real()] * 5


class _Header(resource.Resource):
    """Answers with a header set from the request, line breaks and all."""

    isLeaf = True

    def render_POST(self, request: server.Request) -> bytes:  # noqa: N802 (Twisted API)
        request.setHeader(b"x-echo", request.getHeader(b"x-in") or b"")
        request.setHeader(b"content-type", b"application/json")
        return b"{}"


class _WriteCounting(StringTransport):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        super().write(data)

    def writeSequence(self, seq: Any) -> None:  # noqa: N802 (Twisted API)
        self.writes += len(seq)   # a piece each: the transport checks and copies each
        super().writeSequence(seq)


def _connected(channel_class: type, transport: StringTransport) -> Any:
    """A channel of ``channel_class`` serving :class:`_Header`, connected to ``transport``."""
    site = server.Site(_Header(), timeout=None, reactor=Clock())
    site.protocol = channel_class
    channel = site.buildProtocol(None)
    channel.makeConnection(transport)
    return channel


def _answer(channel_class: type, head: bytes) -> tuple[bytes, int]:
    transport = _WriteCounting()
    _connected(channel_class, transport).dataReceived(head + b"Content-Length: 2\r\n\r\n{}")
    return transport.value(), transport.writes


def test_status_line_and_headers_are_one_write_with_twisteds_bytes() -> None:
    """The answer's head goes out in one write, byte for byte what HTTPChannel writes in ~25 pieces."""
    head = b"POST / HTTP/1.1\r\nHost: x\r\nX-In: a b\r\n"
    ours, our_writes = _answer(DeadlineChannel, head)
    twisteds, _ = _answer(http.HTTPChannel, head)
    date = re.compile(rb"Date: [^\r]*\r\n")
    assert date.sub(b"", ours) == date.sub(b"", twisteds)
    assert ours.startswith(b"HTTP/1.1 200 OK\r\n") and b"X-Echo: a b\r\n" in ours
    assert our_writes == 2   # the head, then the body (HTTPChannel: 6 + 4 per header, then the body)


def test_header_values_cannot_inject_lines() -> None:
    """A value holding CR LF (set by a resource from request data) is not split into a new header."""
    transport = StringTransport()
    request = server.Request(_connected(DeadlineChannel, transport))
    request.setHeader(b"x-echo", b"a\r\nSet-Cookie: evil=1")
    request.write(b"x")
    assert b"\r\nSet-Cookie" not in transport.value()


class _Path(resource.Resource):
    isLeaf = True

    def render_GET(self, request: server.Request) -> bytes:  # noqa: N802 (Twisted API)
        return b"/".join(request.postpath)


def test_bounded_request_dates_answers_by_the_sites_clock_and_routes_like_twisted() -> None:
    """``BoundedRequest.process`` formats Date once a second: each answer carries its own second."""
    from bridge.api import BoundedRequest

    clock = Clock()
    clock.advance(1_764_763_200.75)            # 2025-12-03 12:00:00.75 UTC
    root = resource.Resource()
    root.putChild(b"p", _Path())
    site = server.Site(root, timeout=None, reactor=clock)
    site.protocol = DeadlineChannel
    site.requestFactory = BoundedRequest
    transport = StringTransport()
    channel = site.buildProtocol(None)
    channel.makeConnection(transport)
    channel.dataReceived(b"GET /p/a%20b/c HTTP/1.1\r\nHost: x\r\n\r\n")
    clock.advance(0.5)                         # the next second
    channel.dataReceived(b"GET /p/%2F HTTP/1.1\r\nHost: x\r\n\r\n")
    answers = transport.value().split(b"HTTP/1.1 ")[1:]
    assert answers[0].startswith(b"200 ") and answers[0].endswith(b"\r\n\r\na b/c")
    assert b"Date: Wed, 03 Dec 2025 12:00:00 GMT\r\n" in answers[0]
    assert b"Server: TwistedWeb/" in answers[0]
    assert answers[1].endswith(b"\r\n\r\n/") and b"Date: Wed, 03 Dec 2025 12:00:01 GMT\r\n" in answers[1]
