"""The pusher's HTTP/1.1 client over in-memory transports (``StringTransport``, ``Clock``).

What crosses the wire is checked byte for byte; the receiver's answers are written as
raw HTTP, in every framing a receiver may use.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from bridge.pushclient import PushConnectionPool, PushResponse, ResponseBroken

URL = "http://receiver.test:8080/cb?k=1"
BODY = b'{"smsMsgId":"m1"}'


class Endpoints:
    """Connects every request to a fresh in-memory transport; remembers the protocols."""

    def __init__(self) -> None:
        self.made: list[tuple[Any, StringTransport]] = []
        self.targets: list[Any] = []

    def endpointForURI(self, target: Any) -> Any:  # noqa: N802 (Twisted API)
        self.targets.append(target)
        outer = self

        class _Endpoint:
            def connect(self, factory: Any) -> Deferred[Any]:
                proto = factory.buildProtocol(None)
                transport = StringTransport()
                proto.makeConnection(transport)
                outer.made.append((proto, transport))
                return succeed(proto)
        return _Endpoint()


def _fired(d: Deferred[Any]) -> list[Any]:
    box: list[Any] = []
    d.addBoth(box.append)
    return box


def _next_push_opens_a_new_connection(client: PushConnectionPool, endpoints: Endpoints, proto: Any) -> None:
    """The connection ends; the next push does not find it in the pool."""
    proto.connectionLost(Failure(ConnectionDone()))
    _fired(client.request("POST", URL, data=BODY))
    assert len(endpoints.made) == 2


@pytest.fixture(name="pool")
def _pool() -> tuple[PushConnectionPool, Endpoints, Clock]:
    clock, endpoints = Clock(), Endpoints()
    return PushConnectionPool(clock, endpoints, per_host=2, idle_s=50.0), endpoints, clock


def test_request_bytes_and_a_keep_alive_answer(pool: tuple[PushConnectionPool, Endpoints, Clock]) -> None:
    client, endpoints, _ = pool
    got = _fired(client.request("POST", URL, data=BODY, headers={"Content-Type": ["application/json"]}))
    proto, transport = endpoints.made[0]
    sent = transport.value()
    head, _, body = sent.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /cb?k=1 HTTP/1.1"
    assert set(lines[1:]) == {b"host: receiver.test:8080", b"content-length: 17", b"Content-Type: application/json"}
    assert body == BODY
    assert (endpoints.targets[0].scheme, endpoints.targets[0].host, endpoints.targets[0].port) == (
        b"http", b"receiver.test", 8080)
    proto.dataReceived(b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\nok")
    assert got == [PushResponse(202)]
    # The connection is reused for the next push: no second connect.
    transport.clear()
    again = _fired(client.request("POST", URL, data=BODY))
    assert len(endpoints.made) == 1 and transport.value().startswith(b"POST /cb?k=1 HTTP/1.1")
    proto.dataReceived(b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nnope\r\n0\r\n\r\n")
    assert again == [PushResponse(500)]


def test_answer_split_across_reads_and_a_1xx_first(pool: tuple[PushConnectionPool, Endpoints, Clock]) -> None:
    client, endpoints, _ = pool
    got = _fired(client.request("POST", URL, data=BODY))
    proto, _ = endpoints.made[0]
    for chunk in (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 20", b"0 OK\r\nContent-Le", b"ngth: 0\r\n\r\n"):
        assert got == []
        proto.dataReceived(chunk)
    assert got == [PushResponse(200)]


def test_connection_close_answer_is_not_reused(pool: tuple[PushConnectionPool, Endpoints, Clock]) -> None:
    client, endpoints, _ = pool
    got = _fired(client.request("POST", URL, data=BODY))
    proto, transport = endpoints.made[0]
    proto.dataReceived(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    assert got == [PushResponse(200)] and transport.disconnecting
    _next_push_opens_a_new_connection(client, endpoints, proto)


def test_http10_body_read_until_close(pool: tuple[PushConnectionPool, Endpoints, Clock]) -> None:
    client, endpoints, _ = pool
    got = _fired(client.request("POST", URL, data=BODY))
    proto, _ = endpoints.made[0]
    proto.dataReceived(b"HTTP/1.0 200 OK\r\n\r\nsome body")
    assert got == []
    proto.connectionLost(Failure(ConnectionDone()))
    assert got == [PushResponse(200)]


@pytest.mark.parametrize("answer", [b"", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"])
def test_connection_lost_before_a_whole_answer_fails(pool: tuple[PushConnectionPool, Endpoints, Clock],
                                                     answer: bytes) -> None:
    client, endpoints, _ = pool
    got = _fired(client.request("POST", URL, data=BODY))
    proto, _ = endpoints.made[0]
    proto.dataReceived(answer)
    proto.connectionLost(Failure(ConnectionLost()))
    [failure] = got
    assert failure.check(ResponseBroken)


def test_garbage_answer_fails_and_aborts(pool: tuple[PushConnectionPool, Endpoints, Clock]) -> None:
    client, endpoints, _ = pool
    got = _fired(client.request("POST", URL, data=BODY))
    proto, transport = endpoints.made[0]
    proto.dataReceived(b"SMPP is not HTTP\r\n\r\n")
    [failure] = got
    assert failure.check(ResponseBroken) and "bad HTTP" in failure.getErrorMessage()
    assert transport.disconnecting


def test_cancel_aborts_the_connection(pool: tuple[PushConnectionPool, Endpoints, Clock]) -> None:
    client, endpoints, _ = pool
    d = client.request("POST", URL, data=BODY)
    got = _fired(d)
    d.cancel()                                   # the pusher's timeout
    _, transport = endpoints.made[0]
    [failure] = got
    assert failure.check(CancelledError) and transport.disconnecting


def test_idle_connections_close_after_idle_s_and_at_stop(pool: tuple[PushConnectionPool, Endpoints, Clock]) -> None:
    client, endpoints, clock = pool
    first = _fired(client.request("POST", URL, data=BODY))
    second = _fired(client.request("POST", URL, data=BODY))   # two in flight: two connections
    for proto, _ in endpoints.made:
        proto.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert first == second == [PushResponse(200)]
    (_, t1), (_, t2) = endpoints.made
    clock.advance(49.0)
    assert not t1.disconnecting and not t2.disconnecting
    clock.advance(1.0)
    assert t1.disconnecting and t2.disconnecting
    # At stop, idle connections are closed at once.
    endpoints.made.clear()
    _fired(client.request("POST", URL, data=BODY))
    proto, transport = endpoints.made[0]
    proto.dataReceived(b"HTTP/1.1 204 No Content\r\n\r\n")
    client.closeCachedConnections()
    assert transport.disconnecting and clock.getDelayedCalls() == []


def test_https_and_default_ports() -> None:
    endpoints = Endpoints()
    client = PushConnectionPool(Clock(), endpoints, per_host=1, idle_s=1.0)
    client.request("POST", "https://example.com/a", data=b"{}")
    _, transport = endpoints.made[0]
    assert b"host: example.com\r\n" in transport.value()
    assert (endpoints.targets[0].scheme, endpoints.targets[0].port) == (b"https", 443)


def test_a_header_value_with_a_line_break_is_never_sent(pool: tuple[PushConnectionPool, Endpoints, Clock]) -> None:
    client, endpoints, _ = pool
    got = _fired(client.request("POST", URL, data=BODY, headers={"X-Evil": ["a\r\nX-Injected: 1"]}))
    _, transport = endpoints.made[0]
    [failure] = got
    assert failure.check(ResponseBroken) and "X-Evil" in failure.getErrorMessage()
    assert transport.value() == b"" and transport.disconnecting


def test_no_length_answer_ends_with_the_connection(pool: tuple[PushConnectionPool, Endpoints, Clock]) -> None:
    client, endpoints, _ = pool
    got = _fired(client.request("POST", URL, data=BODY))
    proto, _ = endpoints.made[0]
    proto.dataReceived(b"HTTP/1.1 201 Created\r\nContent-Type: text/plain\r\n\r\npart")
    assert got == []
    _next_push_opens_a_new_connection(client, endpoints, proto)
    assert got == [PushResponse(201)]


def test_endless_headers_are_refused(pool: tuple[PushConnectionPool, Endpoints, Clock]) -> None:
    client, endpoints, _ = pool
    got = _fired(client.request("POST", URL, data=BODY))
    proto, transport = endpoints.made[0]
    proto.dataReceived(b"HTTP/1.1 200 OK\r\n")
    for _ in range(70):
        if got:
            break
        proto.dataReceived(b"X-Filler: " + b"a" * 1000 + b"\r\n")
    [failure] = got
    assert failure.check(ResponseBroken) and "headers longer" in failure.getErrorMessage()
    assert transport.disconnecting


def test_a_huge_body_answers_and_drops_the_connection(pool: tuple[PushConnectionPool, Endpoints, Clock]) -> None:
    client, endpoints, _ = pool
    got = _fired(client.request("POST", URL, data=BODY))
    proto, transport = endpoints.made[0]
    proto.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 5000000\r\n\r\n")
    proto.dataReceived(b"x" * (1024 * 1024 + 1))
    assert got == [PushResponse(200)] and transport.disconnecting


def test_unasked_bytes_on_an_idle_connection_drop_it(pool: tuple[PushConnectionPool, Endpoints, Clock]) -> None:
    client, endpoints, _ = pool
    got = _fired(client.request("POST", URL, data=BODY))
    proto, transport = endpoints.made[0]
    proto.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert got == [PushResponse(200)] and not transport.disconnecting
    proto.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")   # answers nothing we asked
    assert transport.disconnecting
    _next_push_opens_a_new_connection(client, endpoints, proto)


def test_upgrade_answer_is_broken(pool: tuple[PushConnectionPool, Endpoints, Clock]) -> None:
    client, endpoints, _ = pool
    got = _fired(client.request("POST", URL, data=BODY))
    proto, transport = endpoints.made[0]
    proto.dataReceived(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n")
    [failure] = got
    assert failure.check(ResponseBroken) and transport.disconnecting


def test_a_busy_connection_keeps_one_timer_and_closes_idle_s_after_its_last_answer(
        pool: tuple[PushConnectionPool, Endpoints, Clock]) -> None:
    client, endpoints, clock = pool
    for _ in range(100):                                    # a push every second for 100 s
        got = _fired(client.request("POST", URL, data=BODY))
        proto, transport = endpoints.made[0]
        proto.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        assert got == [PushResponse(200)]
        assert len(clock.getDelayedCalls()) <= 1
        clock.advance(1.0)
    assert len(endpoints.made) == 1 and not transport.disconnecting
    clock.advance(48.9)                                     # last answer 49.9 s ago
    assert not transport.disconnecting
    clock.advance(0.1)
    assert transport.disconnecting


def test_a_big_body_read_with_the_end_of_the_headers_is_not_taken_for_headers(
        pool: tuple[PushConnectionPool, Endpoints, Clock]) -> None:
    client, endpoints, _ = pool
    got = _fired(client.request("POST", URL, data=BODY))
    proto, _ = endpoints.made[0]
    body = b"x" * 70_000
    proto.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Le")
    proto.dataReceived(b"ngth: %d\r\n\r\n" % len(body) + body)   # one read: headers' end and 70 KB
    assert got == [PushResponse(200)]
