"""Connection hygiene for the HTTP API: read deadlines and a cap on open connections.

Twisted's ``Site`` has only an idle timeout, which every byte resets, so a client that
sends one header byte every few seconds (slowloris) keeps its connection for ever.
:class:`DeadlineChannel` gives each request a deadline for its headers and another for
its body, counted from their first byte whatever the pace, and closes a keep-alive
connection idle between requests (with ``idle_timeout_s`` set, in place of Twisted's own
``Site(timeout=...)``, which schedules a timer per request). :class:`ConnectionCap` is a
``WrappingFactory`` that refuses connections beyond a total, logging once per burst.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.web import http
from twisted.web.http_headers import Headers

if TYPE_CHECKING:
    from twisted.internet.interfaces import IAddress, IDelayedCall
    from twisted.internet.protocol import Factory

__all__ = ["ConnectionCap", "DeadlineChannel"]

log = structlog.get_logger("api")

_TIMEOUT_RESPONSE = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"


class DeadlineChannel(http.HTTPChannel):
    """An ``HTTPChannel`` whose requests must arrive in time, not just keep trickling.

    The header deadline starts when the connection opens or a request's first byte
    arrives; the body deadline when its headers are complete. A late request gets a
    408 and the connection is closed (and aborted later if the client does not read,
    Twisted's ``abortTimeout``).

    One timer per connection, not two per request: a deadline is a time stamp, and the
    timer, when it goes off, compares the stamp with the clock and goes again for the
    time left. A keep-alive connection answering a request every few milliseconds
    then schedules about one timer per header timeout instead of three per request.
    The same timer closes the connection once it has been idle ``idle_timeout_s``
    after an answer (None: leave that to Twisted's ``Site(timeout=...)``).
    """

    header_timeout_s = 10.0
    body_timeout_s = 30.0
    idle_timeout_s: float | None = None
    _deadline: IDelayedCall | None = None   # goes off at or before ``_due``
    _due = 0.0
    _part: str | None = None                # "headers", "body" or "idle" while a deadline runs
    timed_out = 0  # class-wide count, for metrics and tests
    _host: IAddress | None = None

    def connectionMade(self) -> None:  # noqa: N802 (Twisted API)
        super().connectionMade()
        self._arm(self.header_timeout_s, "headers")

    def getHost(self) -> IAddress:  # noqa: N802 (Twisted API)
        """The local address, read once: each Request asks for it, a getsockname call every time."""
        if self._host is None:
            self._host = super().getHost()
        return self._host

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes, headers: Any) -> None:  # noqa: N802
        """The status line and headers as one bytes write (Twisted passes ~25 pieces to writeSequence).

        ``headers`` is a ``Headers``, which refused line breaks in names and values when they were
        set; anything else goes through Twisted's own sanitising path.
        """
        if not isinstance(headers, Headers):
            super().writeHeaders(version, code, reason, headers)
            return
        head = [version, b" ", code, b" ", reason, b"\r\n"]
        for name, values in headers.getAllRawHeaders():
            for value in values:
                head += (name, b": ", value, b"\r\n")
        head.append(b"\r\n")
        self.transport.write(b"".join(head))

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted API)
        if self._part in (None, "idle") and not self._handlingRequest:
            self._arm(self.header_timeout_s, "headers")
        super().dataReceived(data)

    def allHeadersReceived(self) -> None:  # noqa: N802 (Twisted API)
        self._arm(self.body_timeout_s, "body")
        super().allHeadersReceived()

    def allContentReceived(self) -> None:  # noqa: N802 (Twisted API)
        self._part = None
        super().allContentReceived()

    def requestDone(self, request: Any) -> None:  # noqa: N802 (Twisted API)
        super().requestDone(request)
        if (self.idle_timeout_s is not None and self.persistent and not self._handlingRequest
                and self._part is None):
            self._arm(self.idle_timeout_s, "idle")

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802 (Twisted API)
        self._part = None
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None
        super().connectionLost(reason)

    def _now(self) -> float:
        return self.site.reactor.seconds()   # the Site's reactor, the one its timers run on

    def _arm(self, seconds: float, part: str) -> None:
        self._part = part
        self._due = self._now() + seconds
        timer = self._deadline
        if timer is not None and timer.active():
            if timer.getTime() <= self._due:
                return   # it goes off first and looks again
            timer.cancel()
        self._deadline = self.callLater(seconds, self._check)

    def _check(self) -> None:
        self._deadline = None
        if self._part is None:
            return   # between requests: the next one arms again
        left = self._due - self._now()
        if left > 0:
            self._deadline = self.callLater(left, self._check)
            return
        part, self._part = self._part, None
        if part == "idle":
            self.timeoutConnection()   # Twisted's idle close: no answer owed
            return
        seconds = self.header_timeout_s if part == "headers" else self.body_timeout_s
        DeadlineChannel.timed_out += 1
        log.info("api.request_timeout", part=part, timeout_s=seconds)
        self.transport.write(_TIMEOUT_RESPONSE)
        self.timeoutConnection()  # Twisted's: close now, abort after abortTimeout


class ConnectionCap(WrappingFactory):
    """At most ``limit`` open connections; more are closed as soon as they are accepted.

    The cap is logged once when it is reached (``api.connection_cap_reached``) and once
    when the open count falls back below 90 % of it (``api.connection_cap_cleared``,
    with how many were refused), not once per refused connection.
    """

    def __init__(self, wrapped: Factory, limit: int) -> None:
        super().__init__(wrapped)
        if limit < 1:
            raise ValueError("the connection limit must be at least 1")
        self.limit = limit
        self.refused = 0
        self._burst_refused = 0
        self._capped = False

    @property
    def open(self) -> int:
        return len(self.protocols)

    def buildProtocol(self, addr: IAddress) -> ProtocolWrapper | None:  # noqa: N802 (Twisted API)
        if len(self.protocols) >= self.limit:
            self.refused += 1
            self._burst_refused += 1
            if not self._capped:
                self._capped = True
                log.warning("api.connection_cap_reached", limit=self.limit, open=len(self.protocols))
            return None  # the reactor closes the connection at once
        return super().buildProtocol(addr)

    def unregisterProtocol(self, p: ProtocolWrapper) -> None:  # noqa: N802 (Twisted API)
        super().unregisterProtocol(p)
        if self._capped and len(self.protocols) < self.limit * 0.9:
            self._capped = False
            log.info("api.connection_cap_cleared", limit=self.limit, open=len(self.protocols),
                     refused=self._burst_refused)
            self._burst_refused = 0
