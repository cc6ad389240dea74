"""Push URL policy: which statusCallback / uplink URLs the bridge will POST to."""

from __future__ import annotations

import ipaddress

import pytest

from bridge.urlpolicy import (
    MAX_URL_LENGTH,
    address_problem,
    check_push_url,
    checked_push_url,
    host_allowed,
    literal_address,
    normalise_host,
    parse_host_port,
)

ANY: frozenset[str] = frozenset()


class TestCheckPushUrl:
    @pytest.mark.parametrize("url", [
        "http://example.com/cb",
        "https://example.com/cb?token=abc#frag",
        "HTTPS://Example.COM:8443/a/b",
        "http://8.8.8.8:8080/",
        "http://[2001:4860:4860::8888]:9000/cb",
        "http://receiver_1.internal/cb",
        "http://例え.jp/cb",
        "http://example.com./cb",
    ])
    def test_accepted(self, url: str) -> None:
        """Plain http/https URLs with a host pass when there is no allow-list."""
        assert check_push_url(url, ANY) is None

    @pytest.mark.parametrize(("url", "fragment"), [
        ("", "empty"),
        ("ftp://example.com/cb", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("javascript:alert(1)", "scheme"),
        ("example.com/cb", "scheme"),
        ("//example.com/cb", "scheme"),
        ("gopher://example.com:70/", "scheme"),
        ("http:///cb", "no host"),
        ("http://:8080/cb", "no host"),
        ("http://user:secret@example.com/cb", "user info"),
        ("http://user@example.com/cb", "user info"),
        ("http://evil.test\\@example.com/", "user info"),
        ("http://example.com:99999/", "malformed"),
        ("http://example.com:0/", "port 0"),
        ("http://exa mple.com/", "whitespace"),
        ("http://example.com/\r\nX-Injected: 1", "whitespace"),
        ("http://example.com/\x00", "control"),
        ("http://exa$mple.com/", "invalid host"),
        ("http://example..com/", "invalid host"),
        ("http://[zz::1]/", "malformed"),
        ("http://" + "a" * MAX_URL_LENGTH + ".com/", "longer than"),
    ])
    def test_rejected(self, url: str, fragment: str) -> None:
        """Each rejected URL gets an error text naming its problem."""
        problem = check_push_url(url, ANY)
        assert problem is not None
        assert fragment in problem

    def test_length_limit_is_inclusive(self) -> None:
        """A URL of exactly the limit passes; one more character fails."""
        base = "http://example.com/"
        exact = base + "x" * (MAX_URL_LENGTH - len(base))
        assert check_push_url(exact, ANY) is None
        assert check_push_url(exact + "x", ANY) is not None

    def test_allow_list(self) -> None:
        """With an allow-list, only listed hosts (case-insensitive) pass."""
        allowed = frozenset({"hooks.example.com", "10.0.0.5"})
        assert check_push_url("https://HOOKS.example.com/cb", allowed) is None
        assert check_push_url("http://10.0.0.5:8080/cb", allowed, frozenset({"10.0.0.5:8080"})) is None
        problem = check_push_url("https://evil.example.net/cb", allowed)
        assert problem is not None and "evil.example.net" in problem and "allowed" in problem
        assert check_push_url("https://example.com/cb", allowed) is not None

    def test_allow_list_is_checked_after_other_rules(self) -> None:
        """An allowed host does not excuse user info or a bad scheme."""
        allowed = frozenset({"example.com"})
        assert "user info" in (check_push_url("http://u:p@example.com/", allowed) or "")
        assert "scheme" in (check_push_url("ftp://example.com/", allowed) or "")


class TestHostAllowed:
    @pytest.mark.parametrize(("host", "expected"), [
        ("a.example.com", True),
        ("b.a.example.com", True),
        ("example.com", False),
        ("badexample.com", False),
        ("exact.test", True),
        ("EXACT.TEST.", True),
        ("sub.exact.test", False),
        ("::1", True),
    ])
    def test_wildcard_and_exact(self, host: str, expected: bool) -> None:
        """``*.domain`` matches subdomains only; other entries match exactly."""
        allowed = frozenset({"*.example.com", "exact.test", "[::1]"})
        assert host_allowed(host, allowed) is expected

    def test_empty_allows_all(self) -> None:
        """No allow-list means every host."""
        assert host_allowed("anything.test", frozenset())

    def test_normalise(self) -> None:
        """Brackets, case and the root dot do not matter."""
        assert normalise_host("[::1]") == "::1"
        assert normalise_host("Example.COM.") == "example.com"


class TestPrivateTargets:
    """Issue 14, SSRF: loopback, private, link-local, multicast, unspecified targets are refused."""

    @pytest.mark.parametrize(("url", "kind"), [
        ("http://127.0.0.1:8470/v1/sms", "loopback"),
        ("http://127.0.0.1:8471/reset", "loopback"),
        ("http://[::1]:8470/", "loopback"),
        ("http://0.0.0.0:8470/", "unspecified"),
        ("http://[::]/", "unspecified"),
        ("http://2130706433:8471/reset", "loopback"),        # decimal
        ("http://0x7f000001/", "loopback"),                  # hex
        ("http://0177.0.0.1/", "loopback"),                  # octal
        ("http://127.1/", "loopback"),                       # short form
        ("http://0x7f.1/", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),          # IPv4-mapped
        ("http://[::ffff:7f00:1]/", "loopback"),
        ("http://10.1.2.3/", "private"),
        ("http://172.16.0.1/", "private"),
        ("http://192.168.1.1/", "private"),
        ("http://[fd00::1]/", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://224.0.0.1/", "multicast"),
        ("http://[ff02::1]/", "multicast"),
        ("http://240.0.0.1/", "reserved"),
        ("http://100.64.0.1/", "non-public"),               # carrier-grade NAT
        ("http://localhost:8470/", "local name"),
        ("http://api.localhost/", "local name"),
        ("http://LOCALHOST./", "local name"),
    ])
    def test_refused_by_default(self, url: str, kind: str) -> None:
        """Every spelling of a non-public target is refused, with a hint naming the exemption."""
        problem = check_push_url(url, ANY)
        assert problem is not None and kind in problem and "allow_private" in problem

    @pytest.mark.parametrize("url", [
        "http://127.0.0.1:9000/uplink",
        "http://2130706433:9000/uplink",
        "http://127.1:9000/x",
    ])
    def test_allow_private_exempts_that_host_port(self, url: str) -> None:
        """An allow_private entry exempts its host:port, whatever the literal's spelling."""
        allow = frozenset({parse_host_port("127.0.0.1:9000")})
        assert check_push_url(url, ANY, allow) is None

    def test_allow_private_is_per_port(self) -> None:
        """The demo receiver's entry does not open the bridge's own API on another port."""
        allow = frozenset({parse_host_port("127.0.0.1:9000")})
        assert check_push_url("http://127.0.0.1:8470/v1/sms", ANY, allow) is not None
        assert check_push_url("http://127.0.0.1/", ANY, allow) is not None
        assert check_push_url("https://127.0.0.1:9000/", ANY, frozenset({"127.0.0.1:443"})) is not None

    def test_public_literals_pass(self) -> None:
        assert check_push_url("http://93.184.216.34/cb", ANY) is None
        assert check_push_url("http://[2606:2800:220:1::]/cb", ANY) is None

    @pytest.mark.parametrize(("host", "expected"), [
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("10.0.513", "10.0.2.1"),
        ("::1", "::1"),
        ("[fe80::1%eth0]", "fe80::1"),
        ("example.com", None),
        ("1e100.net", None),
        ("0x", None),
    ])
    def test_literal_address_reads_like_a_resolver(self, host: str, expected: str | None) -> None:
        got = literal_address(host)
        assert (None if got is None else str(got)) == expected

    def test_address_problem(self) -> None:
        assert address_problem(ipaddress.ip_address("8.8.8.8")) is None
        assert address_problem(ipaddress.ip_address("64:ff9b::7f00:1")) is not None  # NAT64 of 127.0.0.1
        assert address_problem(ipaddress.ip_address("2002:7f00:1::")) is not None     # 6to4 of 127.0.0.1

    @pytest.mark.parametrize(("entry", "canonical"), [
        ("127.0.0.1:9000", "127.0.0.1:9000"),
        ("127.1:9000", "127.0.0.1:9000"),
        ("[::1]:8080", "[::1]:8080"),
        ("Receiver.Internal:80", "receiver.internal:80"),
    ])
    def test_parse_host_port(self, entry: str, canonical: str) -> None:
        assert parse_host_port(entry) == canonical

    @pytest.mark.parametrize("entry", ["127.0.0.1", "host:0", "host:99999", "host:x", "", "a b:1",
                                       "u@host:1", "host:1/path", "::1:80"])
    def test_parse_host_port_rejects(self, entry: str) -> None:
        with pytest.raises(ValueError):
            parse_host_port(entry)


def test_checked_push_url_remembers_per_list() -> None:
    """The cached check keys on the lists too: widening allow_private changes the verdict."""
    url = "http://10.0.0.5:8080/cb"
    assert "private" in (checked_push_url(url, ANY) or "")
    assert checked_push_url(url, ANY, frozenset({"10.0.0.5:8080"})) is None
    assert checked_push_url(url, ANY) == check_push_url(url, ANY)
