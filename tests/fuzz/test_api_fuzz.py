"""``POST /v1/sms`` against hostile bodies, on one real daemon: never a 5xx, nothing stored on a 4xx.

Bodies are arbitrary JSON, objects built from the real field names with values of
any type (and plausible ones, so validation gets deep), huge strings, deep nesting,
bytes that are not UTF-8 or not JSON, under several content types. Each answer is
checked against the store through a read-only SQLite connection.
"""

from __future__ import annotations

import contextlib
import http.client
import json
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.e2e.harness import APP_TOKEN, CHANNEL, CHANNEL2, OPERATOR_TOKEN, Bridge

FIELDS = ("from", "to", "signature", "templateId", "templateParas", "body", "statusCallback",
          "extend", "class")
NUMBERS = ("+8613800138000", "13800138000", "8613900139000", "008613700137000", "+447700900123",
           "+8614412345678", "+86138001380001111", "", " ", "+", "abc", "+0123456789", "1" * 22,
           "１３８００１３８０００", "+8613800138000\x00")
CONTENT_TYPES = (None, "application/json", "application/json; charset=utf-8", "text/plain",
                 "application/x-www-form-urlencoded", "multipart/form-data; boundary=xyz",
                 "application/json; charset=latin-1", "application/xml", "*/*", "\x7f")

json_scalars = (st.none() | st.booleans() | st.integers() | st.floats()
                | st.text(max_size=40) | st.sampled_from(["", "0", "null", "[]", "{}", "\x00", "\ud800x"]))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=12), inner, max_size=6),
    max_leaves=25,
)
huge_text = st.builds(lambda n, c: c * n, st.integers(0, 400_000), st.sampled_from(["x", "好", "😀", " ", ","]))


def _plausible(name: str, receiver_url: str) -> st.SearchStrategy[Any]:
    """Values near the valid range for ``name``, so requests get past the first check."""
    numbers = st.lists(st.sampled_from(NUMBERS), min_size=0, max_size=8)
    by_field: dict[str, st.SearchStrategy[Any]] = {
        "from": st.sampled_from([CHANNEL, CHANNEL2, "10690009", "", CHANNEL + " "]),
        "to": numbers | numbers.map(",".join) | st.builds(lambda n: ["+8613800138000"] * n, st.integers(0, 700)),
        "signature": st.sampled_from(["HUAWEI", "Shop", "huawei", "", "【HUAWEI】"]),
        "templateId": st.sampled_from(["otp", "note", "nope", "", "OTP"]),
        "templateParas": st.lists(st.text(max_size=30) | st.integers() | st.none(), max_size=3)
        | st.sampled_from([["123456"], ["12345"], ["Ann"], ["x" * 21], ["12345a"]]),
        "body": st.text(max_size=600) | huge_text,
        "statusCallback": st.sampled_from([receiver_url, "ftp://example.com/", "http://", "javascript:1",
                                           "http://user:pw@127.0.0.1/", "http://127.0.0.1:99999/",
                                           "https://" + "a" * 3000 + ".example/"]),
        "extend": st.text(max_size=140) | huge_text,
        "class": st.sampled_from(["otp", "notification", "marketing", "OTP", ""]),
    }
    return by_field[name] | json_values


def field_bodies(receiver_url: str) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with any subset of the real fields, each plausible or of any JSON type."""
    return st.fixed_dictionaries(
        {}, optional={name: _plausible(name, receiver_url) for name in FIELDS},
    ).flatmap(lambda d: st.dictionaries(st.text(max_size=8), json_values, max_size=2).map(lambda x: {**x, **d}))


def near_valid_bodies(receiver_url: str) -> st.SearchStrategy[dict[str, Any]]:
    """A valid request with up to three fields replaced or removed: most checks fire one at a time."""
    bases = st.sampled_from([
        {"from": CHANNEL, "to": ["+8613800138000"], "templateId": "otp", "templateParas": ["123456"]},
        {"from": CHANNEL2, "to": "+8613800138000,+447700900123", "body": "Your parcel has shipped.",
         "signature": "Shop", "class": "notification", "extend": "order-1"},
        {"from": CHANNEL, "to": ["13800138000", "+8613800138000"], "templateId": "note",
         "templateParas": ["Ann"], "statusCallback": receiver_url, "class": "otp"},
    ])
    removed = object()
    edits = st.dictionaries(st.sampled_from(FIELDS), st.just(removed) | st.deferred(
        lambda: st.sampled_from(FIELDS).flatmap(lambda n: _plausible(n, receiver_url))), max_size=3)

    def apply(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
        body = dict(base)
        for name, value in changes.items():
            if value is removed:
                body.pop(name, None)
            else:
                body[name] = value
        return body

    return st.builds(apply, bases, edits)


def _nested(depth: int, opener: str) -> bytes:
    closer = {"[": "]", "{\"a\":": "}"}[opener]
    return (opener * depth + "1" + closer * depth).encode()


raw_bodies = st.one_of(
    st.binary(max_size=200),
    st.builds(_nested, st.integers(1, 200_000), st.sampled_from(["[", "{\"a\":"])),
    st.sampled_from([
        b"", b"null", b"[]", b"{}", b"\xef\xbb\xbf{}", b'{"from": "\xff\xfe"}', b'{"from": "10690001"',
        b'{"from":"\\ud800","to":"+8613800138000","body":"x"}', b"NaN", b"1" * 5000, b"\x00" * 64,
        b'{"from":"10690001","to":["+8613800138000"],"body":"\\udfff"}',
        b'{"from":"10690001","to":["+8613800138000"],"body":"x","extend":"\\ud83d"}',
        b'{"from":"10690001","to":["+8613800138000"],"templateId":"note","templateParas":["\\ud800"]}',
        b'{"from":"10690001","to":["+8613800138000"],"body":"\xed\xa0\x80"}',
        '{"from":"10690001","to":["+8613800138000"],"body":"x"}'.encode("utf-16"),
    ]),
)


def post(bridge: Bridge, raw: bytes, content_type: str | None, token: str | None = APP_TOKEN) -> tuple[int, bytes]:
    """One POST with exactly these bytes and headers (urllib would add its own)."""
    conn = http.client.HTTPConnection("127.0.0.1", bridge.ready["api"], timeout=30)
    try:
        conn.putrequest("POST", "/v1/sms")
        if token is not None:
            conn.putheader("Authorization", f"Bearer {token}")
        if content_type is not None:
            conn.putheader("Content-Type", content_type)
        conn.putheader("Content-Length", str(len(raw)))
        conn.endheaders()
        # Refused from its Content-Length, a body may be cut off mid-send; the answer still waits.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.send(raw)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def check(bridge: Bridge, stored: Callable[[], tuple[int, ...]], raw: bytes, content_type: str | None,
          token: str | None = APP_TOKEN) -> int:
    """POST and hold the answer to the contract; returns the status."""
    before = stored()
    status, answer = post(bridge, raw, content_type, token)
    after = stored()
    assert status < 500, (status, answer[:300], raw[:300])
    if status == 200:
        body = json.loads(answer)
        assert body["code"] == "000000"
        accepted = sum(1 for row in body["result"] if row["status"] == "000000")
        assert after[0] - before[0] == accepted, (before, after, body)
    else:
        assert 400 <= status < 500, status
        assert after == before, f"a {status} answer stored something: {before} -> {after}"
        if answer.startswith(b"{"):
            error = json.loads(answer)
            assert set(error) == {"code", "description"}, error
    return status


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.data_too_large])


class TestIntakeFuzz:
    @FUZZ
    @given(body=json_values, content_type=st.sampled_from(CONTENT_TYPES))
    def test_any_json_value(self, bridge: Bridge, stored, body: Any, content_type: str | None) -> None:
        """Any JSON value at all, under any content type, is answered 200 or 4xx."""
        event(f"HTTP {check(bridge, stored, json.dumps(body).encode('utf-8', 'surrogatepass'), content_type)}")

    @FUZZ
    @given(data=st.data(), near=st.booleans(), content_type=st.sampled_from(CONTENT_TYPES[:3]))
    def test_objects_of_real_fields(self, bridge: Bridge, stored, data: st.DataObject, near: bool,
                                    content_type: str) -> None:
        """Objects built from the real fields with plausible or mistyped values: 200 or 4xx, 4xx stores nothing."""
        url = bridge.receiver.url("/reports")
        body = data.draw(near_valid_bodies(url) if near else field_bodies(url))
        raw = json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")
        event(f"HTTP {check(bridge, stored, raw, content_type)}")

    def test_valid_request_is_stored(self, bridge: Bridge, stored) -> None:
        """The checker's 200 branch: a valid request stores one message per distinct recipient."""
        body = {"from": CHANNEL, "to": ["+8613800138000", "13800138000", "+447700900123"],
                "templateId": "otp", "templateParas": ["123456"]}
        assert check(bridge, stored, json.dumps(body).encode(), "application/json") == 200

    @FUZZ
    @given(raw=raw_bodies, content_type=st.sampled_from(CONTENT_TYPES))
    def test_raw_bytes(self, bridge: Bridge, stored, raw: bytes, content_type: str | None) -> None:
        """Bytes that are not JSON, not UTF-8, deeply nested or with lone surrogates: never a 5xx."""
        event(f"HTTP {check(bridge, stored, raw, content_type)}")

    @settings(max_examples=30, deadline=None)
    @given(body=field_bodies("http://127.0.0.1:9/"), token=st.sampled_from([None, "", OPERATOR_TOKEN,
                                                                           APP_TOKEN + "x", "\u00e9"]))
    def test_without_app_token(self, bridge: Bridge, stored, body: dict[str, Any], token: str | None) -> None:
        """Without the application's token every body is a 401 and nothing is stored."""
        raw = json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")
        assert check(bridge, stored, raw, "application/json", token=token) == 401

    def test_over_the_size_limit(self, bridge: Bridge, stored) -> None:
        """A body over api.max_body_bytes is a 413 from its Content-Length, and nothing is stored."""
        body = {"from": CHANNEL, "to": ["+8613800138000"], "body": "x", "extend": "y" * 1_100_000}
        assert check(bridge, stored, json.dumps(body).encode(), "application/json") == 413
