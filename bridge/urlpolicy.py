"""Which callback and uplink URLs the bridge is willing to push to (issue 8).

A push URL comes from a customer (``statusCallback``) or from the config (uplink URL),
and the bridge POSTs message data to it from inside the carrier network. So only plain
``http``/``https`` URLs with a real host are accepted, never credentials in the URL
(they would end up in the store and in logs), and, when the operator configures an
allow-list, only hosts on it. The intake API rejects a bad ``statusCallback`` with 400;
the pusher checks again before every push because the allow-list can change between
queueing and pushing.

The URL is parsed with :func:`urllib.parse.urlsplit`, the same parser Twisted's
``Agent`` uses for the request, so the host checked here is the host connected to.
"""

from __future__ import annotations

import ipaddress
import string
from urllib.parse import urlsplit

__all__ = ["MAX_URL_LENGTH", "check_push_url", "host_allowed", "normalise_host"]

MAX_URL_LENGTH = 2048

_SCHEMES = frozenset({"http", "https"})
_HOST_CHARS = frozenset(string.ascii_lowercase + string.digits + "-._")


def check_push_url(url: str, allowed_hosts: frozenset[str]) -> str | None:
    """Return the problem with ``url`` as a short text, or None when it may be pushed to.

    ``allowed_hosts`` empty means any host; otherwise an entry is a host name or IP
    address matched exactly (case-insensitive), or ``*.example.com`` for any subdomain
    of ``example.com`` (not ``example.com`` itself).
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
