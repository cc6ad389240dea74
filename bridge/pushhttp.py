"""The HTTP side of pushes: a lean Agent client whose connections go only where the policy allows.

Every connection is made by :class:`CheckedEndpoints`, an ``IAgentEndpointFactory``: it
resolves the URL's host itself, checks every address the name resolves to against the
SSRF policy (:func:`bridge.urlpolicy.address_problem`), and connects to the checked
address, so a host name that resolves to 127.0.0.1 or 10.0.0.5 is refused at push time
just like the literal is refused at intake. A ``host:port`` in ``allow_private`` is
connected to as is. TLS still verifies the certificate against the URL's host name.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, fail
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.interfaces import IResolutionReceiver, IStreamClientEndpoint
from twisted.internet.protocol import Protocol as _WireProtocol
from twisted.python.failure import Failure
from twisted.web.client import (
    BrowserLikePolicyForHTTPS,
    ResponseDone,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from bridge.pushclient import PushConnectionPool
from bridge.urlpolicy import (
    PushTarget,
    address_problem,
    literal_address,
    normalise_host,
    target_allowed_private,
)

__all__ = ["CheckedEndpoints", "Discard", "HTTPClient", "PushRefused", "build_client"]

BASE_HEADERS = {
    "Content-Type": ["application/json; charset=utf-8"],
    "User-Agent": ["smpp-bridge"],
}


class PushRefused(Exception):
    """The URL's host resolves to an address the SSRF policy refuses: never retried."""


class HTTPClient(Protocol):
    """What the pusher needs of treq: ``HTTPClient``, ``StubTreq`` and :class:`AgentClient` fit."""

    def request(self, method: str, url: str, **kwargs: Any) -> Deferred[Any]: ...


class Discard(_WireProtocol):
    """Reads a response body to its end and drops it, so the connection can be reused.

    Cancelling ``done`` (the push timed out) closes the connection, instead of leaving
    a slow body streaming into a pooled connection.
    """

    def __init__(self) -> None:
        self.done: Deferred[None] = Deferred(self._cancel)

    def _cancel(self, _d: Deferred[None]) -> None:
        if self.transport is not None:
            self.transport.stopProducing()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted API)
        pass

    def connectionLost(self, reason: Failure | None = None) -> None:  # noqa: N802 (Twisted API)
        if self.done.called:
            return
        if reason is None or reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(None)
        else:
            self.done.errback(reason)


@implementer(IResolutionReceiver)
class _Addresses:
    """Collects every address a name resolves to (Twisted's IResolutionReceiver)."""

    def __init__(self) -> None:
        self.found: list[IPv4Address | IPv6Address] = []
        self.done: Deferred[list[IPv4Address | IPv6Address]] = Deferred()

    def resolutionBegan(self, resolution: Any) -> None:  # noqa: N802 (Twisted API)
        pass

    def addressResolved(self, address: Any) -> None:  # noqa: N802 (Twisted API)
        if isinstance(address, IPv4Address | IPv6Address):
            self.found.append(address)

    def resolutionComplete(self) -> None:  # noqa: N802 (Twisted API)
        if not self.done.called:
            self.done.callback(self.found)


@implementer(IStreamClientEndpoint)
class _CheckedEndpoint:
    """Resolve, check every address, connect to a checked one (see the module docstring)."""

    def __init__(self, reactor: Any, target: PushTarget, connect_host: bytes, timeout: float,
                 allow_private: frozenset[str], tls: Any) -> None:
        self._reactor = reactor
        self._target = target
        self._connect_host = connect_host
        self._timeout = timeout
        self._allow_private = allow_private
        self._tls = tls

    def connect(self, factory: Any) -> Deferred[Any]:
        target = self._target
        if target_allowed_private(target, self._allow_private):
            endpoint = HostnameEndpoint(self._reactor, self._connect_host, target.port, timeout=self._timeout)
            return self._wrap(endpoint).connect(factory)
        literal = literal_address(target.host)
        if literal is not None:
            problem = address_problem(literal)
            if problem:
                return fail(PushRefused(f"host {target.host} is {problem}"))
            return self._wrap(self._tcp(str(literal), literal.version)).connect(factory)
        receiver = _Addresses()
        name = target.host if target.host.isascii() else target.host.encode("idna").decode("ascii")
        self._reactor.nameResolver.resolveHostName(receiver, name, portNumber=target.port)
        d = receiver.done
        d.addCallback(self._checked)
        d.addCallback(lambda addr: self._wrap(self._tcp(addr.host, 6 if isinstance(addr, IPv6Address) else 4))
                      .connect(factory))
        return d

    def _checked(self, found: list[IPv4Address | IPv6Address]) -> IPv4Address | IPv6Address:
        host = self._target.host
        if not found:
            from twisted.internet.error import DNSLookupError

            raise DNSLookupError(f"no address for {host}")
        for addr in found:
            ip = literal_address(addr.host)
            problem = "not an IP address" if ip is None else address_problem(ip)
            if problem:
                raise PushRefused(f"host {host} resolves to {addr.host}, {problem}")
        return found[0]

    def _tcp(self, host: str, version: int) -> Any:
        cls = TCP6ClientEndpoint if version == 6 else TCP4ClientEndpoint
        return cls(self._reactor, host, self._target.port, timeout=self._timeout)

    def _wrap(self, endpoint: Any) -> Any:
        if self._target.scheme != "https":
            return endpoint
        return wrapClientTLS(self._tls.creatorForNetloc(self._connect_host, self._target.port), endpoint)


@implementer(IAgentEndpointFactory)
class CheckedEndpoints:
    """The Agent's endpoint factory: every connection goes through :class:`_CheckedEndpoint`."""

    def __init__(self, reactor: Any, *, timeout: float, allow_private: frozenset[str]) -> None:
        self._reactor = reactor
        self._timeout = timeout
        self._allow_private = allow_private
        self._tls = BrowserLikePolicyForHTTPS()

    def endpointForURI(self, uri: Any) -> _CheckedEndpoint:  # noqa: N802 (Twisted API)
        host = uri.host.decode("ascii", "replace") if isinstance(uri.host, bytes) else str(uri.host)
        target = PushTarget(uri.scheme.decode("ascii"), normalise_host(host), uri.port)
        return _CheckedEndpoint(self._reactor, target, uri.host, self._timeout, self._allow_private, self._tls)


def build_client(reactor: Any, *, timeout: float, allow_private: frozenset[str], per_host: int,
                 idle_s: float) -> PushConnectionPool:
    """A keep-alive client whose connections pass the SSRF check; close its connections at stop."""
    return PushConnectionPool(reactor, CheckedEndpoints(reactor, timeout=timeout, allow_private=allow_private),
                              per_host=per_host, idle_s=idle_s)
