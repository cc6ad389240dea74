"""bridge.jsonfast gives what the json module gives: same values and types, same exceptions, same bytes.

Bodies are JSON documents generated from arbitrary values (huge and tiny numbers, long
integers, non-ASCII and astral text, escapes, lone surrogates, NaN, deep nesting),
written in several styles and then cut, extended or re-encoded (BOM, UTF-16, invalid
UTF-8). The API answer writer is checked against json.dumps on string-only values.
"""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from bridge import jsonfast

SETTINGS = settings(max_examples=700, deadline=None)

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-(2**70), 2**70), st.floats(),
    st.floats(allow_nan=False, allow_infinity=False, width=64), st.text(), st.sampled_from(["\ud800", "a\udfffb", "\x00", "\u2028", "\x7f"]),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5)
                      | st.dictionaries(st.text(max_size=6), inner, max_size=5), max_leaves=30)


def _text(value: Any, ensure_ascii: bool, indent: int | None) -> bytes:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent).encode("utf-8", "surrogatepass")


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    raw = _text(draw(values), draw(st.booleans()), draw(st.sampled_from([None, 0, 2])))
    kind = draw(st.integers(0, 9))
    if kind == 0:
        raw = raw[:draw(st.integers(0, len(raw)))]
    elif kind == 1:
        raw += draw(st.sampled_from([b" ", b"\n", b"x", b",", b"}", b"\x00"]))
    elif kind == 2:
        raw = draw(st.sampled_from([b"\xef\xbb\xbf", b""])) + raw
    elif kind == 3:
        raw = raw.decode("utf-8", "surrogatepass").encode("utf-16", "surrogatepass")
    elif kind == 4:
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.binary(min_size=1, max_size=3)) + raw[at:]
    return raw


def _same(a: Any, b: Any) -> bool:
    """Equal values of equal types all the way down (NaN equals NaN, -0.0 differs from 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def _outcome(fn: Any, raw: bytes) -> tuple[str, Any]:
    try:
        return "ok", fn(raw)
    except Exception as exc:  # noqa: BLE001 (comparing whatever json raises)
        return type(exc).__name__, str(exc)


@SETTINGS
@given(bodies())
@example(b'{"a": 18446744073709551616}')                   # orjson would give a float
@example(b'{"a": 1e400, "b": -1e-400, "c": -0, "d": -0.0}')
@example(b'{"a": NaN}')
@example(b'["\\ud800"]')
@example(b'{"a":1,"a":2}')
@example(b"[" * 2000 + b"]" * 2000)                       # json: RecursionError
@example(b"[" * 300 + b"]" * 300)
@example(b"\xed\xa0\x80")                                  # UTF-8-encoded surrogate: json lets it through
@example(b'"\xed\xa0\x80"')
def test_parse_agrees_with_json(raw: bytes) -> None:
    reference = _outcome(json.loads, raw)
    got = _outcome(jsonfast.parse, raw)
    assert got[0] == reference[0]
    if reference[0] == "ok":
        parsed: jsonfast.Parsed = got[1]
        assert _same(parsed.value, reference[1])
        if parsed.unicode_clean:
            json.dumps(parsed.value, ensure_ascii=False).encode("utf-8")   # must not raise
    else:
        assert got[1] == reference[1]


def test_ordinary_body_takes_the_fast_path() -> None:
    raw = json.dumps({"from": "10690001", "to": ["+8613800138000"], "templateId": "otp",
                      "templateParas": ["123456"], "body": "你好 😀"}, ensure_ascii=False).encode()
    assert jsonfast.parse(raw).unicode_clean
    assert not jsonfast.parse(b'{"a": "\\ud800"}').unicode_clean


strings = st.recursive(st.none() | st.text().filter(lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s)),
                       lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8).filter(
                           lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s)), inner, max_size=5),
                       max_leaves=30)


@SETTINGS
@given(strings)
@example({"code": "000000", "description": "Success", "result": [{"originTo": "+86 138\t\n\"\\\x00\x1f\x7f\u2028"}]})
def test_dumps_strings_agrees_with_json(value: Any) -> None:
    expected = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    assert jsonfast.dumps_strings(value) == expected


flat_values = st.one_of(st.text(), st.integers(), st.integers(min_value=2**64, max_value=2**80), st.none())


@given(st.dictionaries(st.text(), flat_values, max_size=12))
@example({"extend": "\ud800"})        # a lone surrogate: orjson refuses, json writes it
@example({"n": 2**70})                # beyond 64 bits: orjson refuses, json writes it
@settings(max_examples=300)
def test_dumps_flat_agrees_with_json(value: dict[str, Any]) -> None:
    """A status report's payload is written exactly as json.dumps would write it."""
    assert jsonfast.dumps_flat(value) == json.dumps(value, ensure_ascii=False, separators=(",", ":"))
