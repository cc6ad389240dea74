"""The pusher's HTTP/1.1 client: h11 speaks the protocol, Twisted carries the bytes.

Why not Twisted's Agent: per request it builds a URI, a Request with a body producer, a
response object, a body protocol and half a dozen Deferreds; at a thousand pushes a
second that was a sixth of the daemon's CPU. A push needs little of it: POST a small
JSON body, read the status line, drop the body, keep the connection for the next one.
h11 (python-hyper) does the parsing and framing (Content-Length, chunked, read until
close, HTTP/1.0 peers, 1xx answers, keep-alive rules); this module only pools
connections. Every connection is opened through the SSRF-checking endpoints of
:mod:`bridge.pushhttp`, TLS included.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import h11
import structlog
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

__all__ = ["PushConnectionPool", "PushResponse", "ResponseBroken"]

log = structlog.get_logger("push.http")

_MAX_HEADERS = 64 * 1024      # a receiver's status line and headers beyond this are refused
_READ_BODY_MAX = 1024 * 1024  # bytes of response body read (and dropped) before giving up on the connection


@dataclass(frozen=True, slots=True)
class PushResponse:
    """The answer to a push. Its body was read and dropped already (``length`` 0)."""

    code: int
    length: int = 0


class ResponseBroken(Exception):
    """The connection ended, or the receiver broke HTTP, before a whole answer arrived."""


@dataclass(frozen=True, slots=True)
class _Target:
    """Where a URL's requests go: the pool key, and what the endpoint factory reads."""

    scheme: bytes
    host: bytes
    port: int
    path: bytes          # path and query, as sent in the request line
    host_header: bytes


@lru_cache(maxsize=1024)
def _target(url: str) -> _Target:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    host = (parts.hostname or "").encode("idna") if not (parts.hostname or "").isascii() \
        else (parts.hostname or "").encode("ascii")
    default = port == (443 if scheme == "https" else 80)
    netloc = host if ":" not in host.decode() else b"[" + host + b"]"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _Target(scheme.encode(), host, port, path.encode("utf-8"),
                   netloc if default else netloc + b":" + str(port).encode())


class _Connection(Protocol):
    """One pooled connection: one request at a time, answered by one Deferred."""

    def __init__(self, pool: PushConnectionPool, key: _Target) -> None:
        self._pool = pool
        self._key = key
        self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=_MAX_HEADERS)
        self._answer: Deferred[PushResponse] | None = None
        self._code = 0
        self._body = 0
        self.idle_call: Any = None
        self.closed = False

    def send(self, key: _Target, body: bytes, headers: list[tuple[bytes, bytes]]) -> Deferred[PushResponse]:
        self._answer = d = Deferred(self._cancel)
        self._code = self._body = 0
        try:
            data = self._h11.send(h11.Request(method=b"POST", target=key.path, headers=[
                (b"host", key.host_header), (b"content-length", str(len(body)).encode()), *headers]))
            data += self._h11.send(h11.Data(data=body)) or b""
            data += self._h11.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError as exc:   # e.g. a header value with a line break
            self._answer = None
            self.transport.abortConnection()
            return _failed(ResponseBroken(f"request refused by the HTTP layer: {exc}"))
        self.transport.write(data)
        return d

    def _cancel(self, _d: Deferred[PushResponse]) -> None:
        # A timed-out push: the connection's state is unknown, so it is not reused.
        self._answer = None
        self.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted API)
        self._h11.receive_data(data)
        self._events()

    def _events(self) -> None:
        while self._answer is not None:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                self._fail(ResponseBroken(f"bad HTTP from the receiver: {exc}"))
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Response):
                self._code = event.status_code
            elif isinstance(event, h11.Data):
                self._body += len(event.data)
                if self._body > _READ_BODY_MAX:
                    self._finish(reuse=False)
                    return
            elif isinstance(event, h11.EndOfMessage):
                self._finish(reuse=True)
                return
            elif isinstance(event, h11.ConnectionClosed):
                self._fail(ResponseBroken("the receiver closed the connection before answering"))
                return

    def _finish(self, *, reuse: bool) -> None:
        d, self._answer = self._answer, None
        reusable = reuse and self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE
        if reusable:
            self._h11.start_next_cycle()
            self._pool.release(self._key, self)
        else:
            self.transport.loseConnection()
        if d is not None:
            d.callback(PushResponse(self._code))

    def _fail(self, exc: Exception) -> None:
        d, self._answer = self._answer, None
        self.transport.abortConnection()
        if d is not None:
            d.errback(Failure(exc))

    def connectionLost(self, reason: Failure = ConnectionDone) -> None:  # noqa: N802 (Twisted API)
        self.closed = True
        self._pool.forget(self._key, self)
        if self._answer is not None:
            # A body delimited by the close ends here; anything else was cut short.
            with contextlib.suppress(h11.RemoteProtocolError):
                self._h11.receive_data(b"")
            self._events()
        if self._answer is not None:
            self._fail(ResponseBroken(f"connection lost: {reason.getErrorMessage()}"))


class PushConnectionPool:
    """Keep-alive connections per receiver (scheme, host, port), opened through ``endpoints``.

    The pusher bounds how many pushes one receiver has in flight, so the pool never
    queues: a request takes an idle connection or opens one. Connections idle for
    ``idle_s`` are closed, as are all of them at :meth:`closeCachedConnections`.
    """

    def __init__(self, reactor: Any, endpoints: Any, *, per_host: int, idle_s: float) -> None:
        self._reactor = reactor
        self._endpoints = endpoints
        self._per_host = per_host
        self._idle_s = idle_s
        self._idle: defaultdict[_Target, list[_Connection]] = defaultdict(list)
        self._open: set[_Connection] = set()

    def request(self, method: str, url: str, *, data: bytes, headers: dict[str, list[str]] | None = None,
                **_ignored: Any) -> Deferred[PushResponse]:
        """POST ``data`` to ``url`` (the pusher only POSTs); fires with the status code."""
        if method != "POST":
            raise ValueError("the push client only POSTs")
        key = _target(url)
        raw = _raw_headers(headers or {})
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if conn.idle_call is not None and conn.idle_call.active():
                conn.idle_call.cancel()
            if not conn.closed:
                return conn.send(key, data, raw)
        opening: Deferred[_Connection] = self._endpoints.endpointForURI(key).connect(
            Factory.forProtocol(lambda: _Connection(self, key)))

        def connected(conn: _Connection) -> Deferred[PushResponse]:
            self._open.add(conn)
            return conn.send(key, data, raw)
        # Cancelling before the connection is made cancels the connect attempt.
        return opening.addCallback(connected)

    def release(self, key: _Target, conn: _Connection) -> None:
        idle = self._idle[key]
        if len(idle) >= self._per_host:
            conn.transport.loseConnection()
            return
        idle.append(conn)
        conn.idle_call = self._reactor.callLater(self._idle_s, self._expire, key, conn)

    def _expire(self, key: _Target, conn: _Connection) -> None:
        conn.idle_call = None
        if conn in self._idle.get(key, ()):
            self._idle[key].remove(conn)
            conn.transport.loseConnection()

    def forget(self, key: _Target, conn: _Connection) -> None:
        self._open.discard(conn)
        idle = self._idle.get(key)
        if idle and conn in idle:
            idle.remove(conn)
        if conn.idle_call is not None and conn.idle_call.active():
            conn.idle_call.cancel()

    def closeCachedConnections(self) -> Deferred[None]:  # noqa: N802 (the name Twisted's pool uses)
        for conns in list(self._idle.values()):
            for conn in list(conns):
                if conn.idle_call is not None and conn.idle_call.active():
                    conn.idle_call.cancel()
                conn.transport.loseConnection()
        self._idle.clear()
        return succeed(None)


def _raw_headers(headers: dict[str, list[str]]) -> list[tuple[bytes, bytes]]:
    return [(name.encode("ascii"), value.encode("latin-1")) for name, values in headers.items() for value in values]


def _failed(exc: Exception) -> Deferred[PushResponse]:
    d: Deferred[PushResponse] = Deferred()
    d.errback(Failure(exc))
    return d
