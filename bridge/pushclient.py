"""The pusher's HTTP/1.1 client: httptools parses the answers, Twisted carries the bytes.

Why not Twisted's Agent: per request it builds a URI, a Request with a body producer, a
response object, a body protocol and half a dozen Deferreds; at a thousand pushes a
second that was a sixth of the daemon's CPU. A push needs little of it: POST a small
JSON body, read the status line, drop the body, keep the connection for the next one.
Why not h11, which this client used first: its event objects and per-header validation
cost 45 µs a push, the most of any single step of a message after the store; httptools
(MagicStack's binding of llhttp, Node's parser) reads an answer in under 2 µs. It does
the framing (Content-Length, chunked, 1xx answers, keep-alive rules); this module writes
the request head (the bridge's own headers, checked before they are sent), recognises a
body that ends with the connection, and pools connections. Every connection is opened
through the SSRF-checking endpoints of :mod:`bridge.pushhttp`, TLS included.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import httptools
import structlog
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from bridge.fastinit import fast_init

__all__ = ["PushConnectionPool", "PushResponse", "ResponseBroken"]

log = structlog.get_logger("push.http")

_MAX_HEADERS = 64 * 1024      # a receiver's status line and headers beyond this are refused
_READ_BODY_MAX = 1024 * 1024  # bytes of response body read (and dropped) before giving up on the connection
# RFC 9110 field names are tokens; values hold no CR, LF or NUL (no header injection).
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(rb"[\x00\r\n]")
_BAD_TARGET = re.compile(rb"[\x00-\x20\x7f]")


@fast_init
@dataclass(frozen=True, slots=True)
class PushResponse:
    """The answer to a push. Its body was read and dropped already (``length`` 0)."""

    code: int
    length: int = 0


class ResponseBroken(Exception):
    """The connection ended, or the receiver broke HTTP, before a whole answer arrived."""


class RequestRefused(ValueError):
    """A URL or header that cannot be written as HTTP/1.1 (a line break in a value...)."""


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


def _request_head(key: _Target, length: int, headers: list[tuple[bytes, bytes]]) -> bytes:
    """The request line and headers; RequestRefused if one cannot be sent as it is."""
    if _BAD_TARGET.search(key.path) or _BAD_VALUE.search(key.host_header):
        raise RequestRefused(f"URL path or host {key.path!r} cannot go in a request line")
    lines = [b"POST ", key.path, b" HTTP/1.1\r\nhost: ", key.host_header,
             b"\r\ncontent-length: ", str(length).encode(), b"\r\n"]
    for name, value in headers:
        if not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value):
            raise RequestRefused(f"header {name!r} cannot be sent: {value!r}")
        lines += (name, b": ", value, b"\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


class _Connection(Protocol):
    """One pooled connection: one request at a time, answered by one Deferred.

    The parser's callbacks (``on_header``, ``on_headers_complete``, ``on_body``,
    ``on_message_complete``) are methods of this class.
    """

    def __init__(self, pool: PushConnectionPool, key: _Target) -> None:
        self._pool = pool
        self._key = key
        self._parser = httptools.HttpResponseParser(self)
        self._answer: Deferred[PushResponse] | None = None
        self._code = 0
        self._body = 0
        self._head = 0             # bytes read while the final answer's headers have not ended
        self._headers_done = False
        self._framed = False       # Content-Length or Transfer-Encoding: else the close ends the body
        self.idle_call: Any = None   # may outlive an idle spell: it looks at ``idle_since``
        self.idle_since = 0.0
        self.closed = False

    def send(self, key: _Target, body: bytes, headers: list[tuple[bytes, bytes]]) -> Deferred[PushResponse]:
        try:
            head = _request_head(key, len(body), headers)
        except RequestRefused as exc:
            self.transport.abortConnection()
            return _failed(ResponseBroken(f"request refused by the HTTP layer: {exc}"))
        self._answer = d = Deferred(self._cancel)
        self._code = self._body = self._head = 0
        self._headers_done = self._framed = False
        self.transport.write(head + body)
        return d

    def _cancel(self, _d: Deferred[PushResponse]) -> None:
        # A timed-out push: the connection's state is unknown, so it is not reused.
        self._answer = None
        self.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted API)
        if self._answer is None:
            # Bytes nobody asked for (after an answer, or after a timeout): the
            # connection's framing can no longer be trusted.
            self.transport.abortConnection()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(ResponseBroken("the receiver switched protocols"))
            return
        except httptools.HttpParserError as exc:
            self._fail(ResponseBroken(f"bad HTTP from the receiver: {exc}"))
            return
        if not self._headers_done and self._answer is not None:
            # Still in the headers after this read: everything read so far was headers.
            self._head += len(data)
            if self._head > _MAX_HEADERS:
                self._fail(ResponseBroken(f"answer headers longer than {_MAX_HEADERS} bytes"))

    # -- parser callbacks ------------------------------------------------------------

    def on_header(self, name: bytes, _value: bytes) -> None:
        lowered = name.lower()
        if lowered == b"content-length" or lowered == b"transfer-encoding":
            self._framed = True

    def on_headers_complete(self) -> None:
        code = self._parser.get_status_code()
        if code >= 200:
            self._code = code
            self._headers_done = True
        else:
            self._framed = False   # (a 1xx answer's headers say nothing of the final one's body)

    def on_body(self, body: bytes) -> None:
        self._body += len(body)
        if self._body > _READ_BODY_MAX and self._answer is not None:
            self._finish(reuse=False)

    def on_message_complete(self) -> None:
        if self._parser.get_status_code() < 200:
            return   # 100 Continue and friends: the final answer follows
        if self._answer is not None:
            self._finish(reuse=self._parser.should_keep_alive())

    # ---------------------------------------------------------------------------------

    def _finish(self, *, reuse: bool) -> None:
        d, self._answer = self._answer, None
        if reuse:
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
        if self._answer is not None and self._headers_done and not self._framed:
            # A body delimited by the close (HTTP/1.0, or no length given) ends here.
            self._finish(reuse=False)
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
        conn.idle_since = self._reactor.seconds()
        if conn.idle_call is None:
            # One timer per connection, not one per push: when it goes off it closes
            # the connection if it has been idle ``idle_s`` since its last answer.
            conn.idle_call = self._reactor.callLater(self._idle_s, self._expire, key, conn)

    def _expire(self, key: _Target, conn: _Connection) -> None:
        conn.idle_call = None
        idle = self._idle.get(key, ())
        if conn not in idle:
            return   # busy: its next release starts the timer again
        left = conn.idle_since + self._idle_s - self._reactor.seconds()
        if left > 0:
            conn.idle_call = self._reactor.callLater(left, self._expire, key, conn)
            return
        idle.remove(conn)
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
