"""Push URL policy: which statusCallback / uplink URLs the bridge will POST to."""

from __future__ import annotations

import pytest

from bridge.urlpolicy import MAX_URL_LENGTH, check_push_url, host_allowed, normalise_host

ANY: frozenset[str] = frozenset()


class TestCheckPushUrl:
    @pytest.mark.parametrize("url", [
        "http://example.com/cb",
        "https://example.com/cb?token=abc#frag",
        "HTTPS://Example.COM:8443/a/b",
        "http://127.0.0.1:8080/",
        "http://[::1]:9000/cb",
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
        assert check_push_url("http://10.0.0.5:8080/cb", allowed) is None
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
