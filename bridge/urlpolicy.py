"""Which callback and uplink URLs the bridge is willing to push to (issues 8 and 14).

A push URL comes from a customer (``statusCallback``) or from the config (uplink URL),
and the bridge POSTs message data to it from inside the carrier network. So only plain
``http``/``https`` URLs with a real host are accepted, never credentials in the URL
(they would end up in the store and in logs), and, when the operator configures an
allow-list, only hosts on it.

Server-side request forgery: a URL whose host is a loopback, private, link-local,
multicast, unspecified or reserved address (the bridge's own API, the simulator's
control port, a cloud metadata service) is refused unless the operator lists its
``host:port`` in ``[callbacks] allow_private``. Literal hosts are read the way a
resolver reads them (``2130706433``, ``0x7f.1``, ``0177.0.0.1`` are all 127.0.0.1),
so odd spellings cannot slip through. Host names are checked again after resolution,
at push time (:mod:`bridge.pushhttp`), because only then is the address known.

The intake API rejects a bad ``statusCallback`` with 400; the pusher checks again
before every push because the lists can change between queueing and pushing.

The URL is parsed with :func:`urllib.parse.urlsplit`, the same parser Twisted's
``Agent`` uses for the request, so the host checked here is the host connected to.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import string
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = [
    "MAX_URL_LENGTH",
    "PushTarget",
    "address_problem",
    "check_push_url",
    "checked_push_url",
    "host_allowed",
    "literal_address",
    "normalise_host",
    "parse_host_port",
    "push_target",
    "target_allowed_private",
]

MAX_URL_LENGTH = 2048

_SCHEMES = frozenset({"http", "https"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_HOST_CHARS = frozenset(string.ascii_lowercase + string.digits + "-._")
_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class PushTarget:
    """Where a push URL connects to: what the allow lists and per-receiver queues key on."""

    scheme: str
    host: str      # normalised: lower-case, no IPv6 brackets, no trailing dot
    port: int

    @property
    def key(self) -> str:
        """``host:port`` (``[v6]:port``), the spelling ``allow_private`` entries use."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def check_push_url(url: str, allowed_hosts: frozenset[str],
                   allow_private: frozenset[str] = frozenset()) -> str | None:
    """Return the problem with ``url`` as a short text, or None when it may be pushed to.

    ``allowed_hosts`` empty means any host; otherwise an entry is a host name or IP
    address matched exactly (case-insensitive), or ``*.example.com`` for any subdomain
    of ``example.com`` (not ``example.com`` itself). ``allow_private`` holds canonical
    ``host:port`` entries (see :func:`parse_host_port`) exempt from the address check.
    """
    if not isinstance(url, str) or not url:
        return "empty URL"
    if len(url) > MAX_URL_LENGTH:
        return f"URL longer than {MAX_URL_LENGTH} characters"
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        return "URL contains whitespace or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"malformed URL ({exc})"
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        return f"scheme must be http or https, got {scheme!r}" if scheme else "scheme must be http or https"
    if "@" in parts.netloc:
        return "user info (user:password@) is not allowed in the URL"
    host = normalise_host(parts.hostname or "")
    if not host:
        return "URL has no host"
    if port == 0:
        return "port 0 is not a valid port"
    problem = _host_problem(host, parts.netloc)
    if problem:
        return problem
    if allowed_hosts and not host_allowed(host, allowed_hosts):
        return f"host {host!r} is not in the allowed hosts"
    key = _canonical_key(PushTarget(scheme, host, port or _DEFAULT_PORTS[scheme]))
    if key in allow_private:
        return None
    hint = f"(allow it in [callbacks] allow_private as {key!r})"
    if _local_name(host):
        return f"host {host!r} is a local name {hint}"
    addr = literal_address(host)
    if addr is not None:
        problem = address_problem(addr)
        if problem:
            return f"host {host!r} is {problem} {hint}"
    return None


@functools.lru_cache(maxsize=4096)
def checked_push_url(url: str, allowed_hosts: frozenset[str],
                     allow_private: frozenset[str] = frozenset()) -> str | None:
    """:func:`check_push_url`, remembered: the verdict is a pure function of its arguments
    (nothing is resolved here), and one callback URL serves thousands of messages."""
    return check_push_url(url, allowed_hosts, allow_private)


def push_target(url: str) -> PushTarget | None:
    """The scheme, host and port ``url`` connects to; None if it does not parse."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = normalise_host(parts.hostname or "")
    if scheme not in _SCHEMES or not host:
        return None
    return PushTarget(scheme, host, port or _DEFAULT_PORTS[scheme])


def target_allowed_private(target: PushTarget, allow_private: frozenset[str]) -> bool:
    """True when the operator exempted this ``host:port`` from the address check."""
    return _canonical_key(target) in allow_private


def parse_host_port(entry: str) -> str:
    """Validate an ``allow_private`` entry and return its canonical ``host:port``.

    Raises ValueError naming the problem. IP literals are canonicalised
    (``127.1:9000`` is ``127.0.0.1:9000``) so that any spelling of the URL matches.
    """
    if not isinstance(entry, str) or not entry.strip():
        raise ValueError("expected \"host:port\"")
    try:
        parts = urlsplit(f"http://{entry.strip()}/")
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"expected \"host:port\", got {entry!r} ({exc})") from None
    host = normalise_host(parts.hostname or "")
    if not host or port is None or parts.netloc != entry.strip() or "@" in entry:
        raise ValueError(f"expected \"host:port\" with a port, got {entry!r}")
    if not 1 <= port <= 65535:
        raise ValueError(f"port out of range in {entry!r}")
    problem = _host_problem(host, parts.netloc)
    if problem:
        raise ValueError(problem)
    return _canonical_key(PushTarget("http", host, port))


def literal_address(host: str) -> _IPAddress | None:
    """The address a host spelled as an IP literal stands for, read as resolvers read it.

    ``inet_aton`` accepts the legacy forms getaddrinfo also accepts: ``2130706433``,
    ``0x7f000001``, ``0177.0.0.1``, ``127.1``. None for a host name.
    """
    host = normalise_host(host).split("%", 1)[0]
    try:
        return ipaddress.IPv6Address(host) if ":" in host else ipaddress.IPv4Address(host)
    except ValueError:
        pass
    if ":" in host or not host or not all(c in "0123456789abcdefx." for c in host):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def address_problem(addr: _IPAddress) -> str | None:
    """Why pushing to ``addr`` is refused (loopback, private, ...), or None if it is public."""
    if isinstance(addr, ipaddress.IPv6Address):
        embedded = addr.ipv4_mapped or addr.sixtofour or (addr.teredo[1] if addr.teredo else None)
        if embedded is not None:
            inner = address_problem(embedded)
            if inner:
                return inner
        if addr in _NAT64 and address_problem(ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)):
            return "a NAT64 address of a non-public IPv4 address"
    checks = (
        (addr.is_unspecified, "an unspecified address"),
        (addr.is_loopback, "a loopback address"),
        (addr.is_link_local, "a link-local address"),
        (addr.is_multicast, "a multicast address"),
        (addr.is_reserved, "a reserved address"),
        (addr.is_private, "a private address"),
        (not addr.is_global, "a non-public address"),
    )
    for hit, text in checks:
        if hit:
            return text
    return None


def normalise_host(host: str) -> str:
    """Lower-case, without IPv6 brackets or a trailing root dot: the form allow-lists use."""
    host = host.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host[:-1] if host.endswith(".") else host


def host_allowed(host: str, allowed_hosts: frozenset[str]) -> bool:
    """True when ``host`` is on the allow-list (empty list: every host)."""
    if not allowed_hosts:
        return True
    host = normalise_host(host)
    for entry in allowed_hosts:
        want = normalise_host(entry)
        if want.startswith("*."):
            suffix = want[1:]
            if host.endswith(suffix) and len(host) > len(suffix):
                return True
        elif host == want:
            return True
    return False


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _canonical_key(target: PushTarget) -> str:
    addr = literal_address(target.host)
    if addr is None:
        return target.key
    return PushTarget(target.scheme, str(addr), target.port).key


def _local_name(host: str) -> bool:
    """Names every resolver maps to this machine (RFC 6761) without asking DNS."""
    return host == "localhost" or host.endswith(".localhost") or host == "localhost.localdomain"


def _host_problem(host: str, netloc: str) -> str | None:
    if "[" in netloc:
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            return f"invalid IPv6 address {host!r}"
        return None
    if host.isascii():
        if not set(host) <= _HOST_CHARS or ".." in host or host.startswith((".", "-")):
            return f"invalid host name {host!r}"
        return None
    try:
        host.encode("idna")
    except UnicodeError:
        return f"invalid host name {host!r}"
    return None
