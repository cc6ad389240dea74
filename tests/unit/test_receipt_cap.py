"""What is stored of a receipt is bounded, and still reads back (replay)."""

from __future__ import annotations

import json

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bridge.receipts import (
    RAW_FIELD_MAX,
    Receipt,
    _capped,
    _receipt_to_json_general,
    parse_receipt,
    receipt_from_json,
    receipt_to_json,
)
from bridge.smpp import codec

HEAD = b"id:0123456789 sub:001 dlvrd:001 submit date:2401011200 done date:2401011201 stat:DELIVRD err:000 text:"


def _via_codec(payload: bytes) -> dict[str, object]:
    pdu = codec.Pdu("deliver_sm", 1, 0, {"source_addr": "8613800138000", "destination_addr": "10690001",
                                         "esm_class": 4, "message_payload": payload})
    return codec.decode(codec.encode(pdu)).fields


class TestStoredSize:
    def test_60kb_receipt_is_capped_and_parseable(self) -> None:
        """A 60 KB receipt stores a few KB; id, stat and err survive, the cut is recorded."""
        receipt = parse_receipt(_via_codec(HEAD + b"x" * 60_000))
        assert len(receipt.raw) > 60_000
        stored = receipt_to_json(receipt)
        assert len(stored) < 3 * RAW_FIELD_MAX + 1_000
        back = receipt_from_json(stored)
        assert (back.message_id, back.stat, back.err) == ("0123456789", "DELIVRD", "000")
        assert back.source == receipt.source
        assert back.raw == receipt.raw[:RAW_FIELD_MAX] and back.text == receipt.text[:RAW_FIELD_MAX]
        assert json.loads(stored)["truncated"] == {"text": len(receipt.text), "raw": len(receipt.raw)}

    def test_escaped_characters_count_against_the_cap(self) -> None:
        """Non-ASCII text is escaped (\\uXXXX): the cap is on what is stored, not on characters."""
        receipt = parse_receipt({"esm_class": 4, "short_message": HEAD + "é".encode("latin-1") * 5_000})
        stored = json.loads(receipt_to_json(receipt))
        for key in ("text", "raw"):
            assert len(json.dumps(stored[key])) - 2 <= RAW_FIELD_MAX
            assert stored[key]

    @pytest.mark.parametrize("size", [0, 10, RAW_FIELD_MAX - len(HEAD)])
    def test_ordinary_receipts_unchanged(self, size: int) -> None:
        """Receipts within the cap round-trip exactly and carry no truncation note."""
        receipt = parse_receipt({"esm_class": 4, "short_message": HEAD + b"y" * size})
        stored = receipt_to_json(receipt)
        assert "truncated" not in json.loads(stored)
        assert receipt_from_json(stored) == receipt


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=RAW_FIELD_MAX // 12))
def test_a_field_short_enough_is_kept_without_measuring(value: str) -> None:
    """The short-field fast path: any text of up to RAW_FIELD_MAX / 12 characters (control
    characters, quotes, astral ones, lone surrogates) fits the cap as JSON, so it is kept whole."""
    assert len(json.dumps(value)) - 2 <= RAW_FIELD_MAX
    assert _capped(value) == value


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.sampled_from(["a", "\x00", "\U0001F600", '"', "長"]), min_size=171, max_size=3000))
def test_a_longer_field_is_cut_to_a_prefix_that_fits(value: str) -> None:
    kept = _capped(value)
    assert value.startswith(kept) and len(json.dumps(kept)) - 2 <= RAW_FIELD_MAX
    assert kept == value or len(json.dumps(kept)) - 2 > RAW_FIELD_MAX // 2   # cut, not emptied


_FIELD = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=40)


@settings(max_examples=400, deadline=None)
@given(message_id=_FIELD, stat=_FIELD, err=_FIELD, text=_FIELD, raw=_FIELD,
       state=st.none() | st.integers(min_value=0, max_value=255))
@example(message_id="", stat="", err="", text="", raw="\x7f", state=None)   # DEL: json escapes it, orjson not
@example(message_id="", stat="", err="", text="a" * 200, raw="\x7f", state=None)   # ...on the long-field path too
def test_stored_line_is_what_json_writes(message_id: str, stat: str, err: str, text: str, raw: str,
                                         state: int | None) -> None:
    """Whichever writer is used (orjson for plain ASCII), the line is json.dumps' own: ASCII,
    escapes and all."""
    receipt = Receipt(message_id=message_id, stat=stat, err=err, message_state=state, submit_date="2401011200",
                      done_date="", text=text, source="text", raw=raw)
    fields = {"v": 1, "message_id": message_id, "stat": stat, "err": err, "message_state": state,
              "submit_date": "2401011200", "done_date": "", "text": text, "source": "text", "raw": raw}
    assert receipt_to_json(receipt) == json.dumps(fields, separators=(",", ":"))


@settings(max_examples=300, deadline=None)
@given(texts=st.lists(st.text(max_size=260) | st.text(alphabet=st.characters(max_codepoint=127), max_size=260),
                      min_size=8, max_size=8),
       state=st.none() | st.integers(min_value=0, max_value=255))
def test_short_ascii_path_writes_what_the_general_path_writes(texts: list[str], state: int | None) -> None:
    """The shortcut for short ASCII receipts and the field-by-field writer give the same line,
    around the length where fields start to be cut (170 characters) and with non-ASCII text."""
    receipt = Receipt(message_id=texts[0], stat=texts[1], err=texts[2], message_state=state,
                      submit_date=texts[3], done_date=texts[4], text=texts[5], source=texts[6], raw=texts[7])
    assert receipt_to_json(receipt) == _receipt_to_json_general(receipt)
