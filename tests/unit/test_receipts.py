"""Tests for bridge.receipts: recognising and parsing delivery receipts."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.receipts import (
    Receipt,
    ReceiptParseError,
    StatusMap,
    is_receipt,
    parse_receipt,
    receipt_datetime,
    receipt_from_json,
    receipt_to_json,
)
from bridge.smpp import codec
from carriers.profiles import canonical_message_id, format_message_id, load_profiles

STANDARD = (
    b"id:0123456789 sub:001 dlvrd:001 submit date:2401011200 done date:2401011201"
    b" stat:DELIVRD err:000 text:Hello world"
)


def _round_trip(fields: dict[str, object]) -> dict[str, object]:
    """Encode and decode a deliver_sm so tests see the codec's real field types."""
    base: dict[str, object] = {"source_addr": "8613800138000", "destination_addr": "10690001"}
    base.update(fields)
    return codec.decode(codec.encode(codec.Pdu("deliver_sm", 1, 0, base))).fields


class TestIsReceipt:
    @pytest.mark.parametrize(
        ("esm_class", "expected"),
        [
            (0x04, True),    # SMSC delivery receipt
            (0x44, True),    # receipt with UDHI set by a sloppy SMSC
            (0x0C, True),    # undefined type, but bit 0x04 is set (CARRIERS.md rule)
            (0x20, True),    # intermediate delivery notification
            (0x00, False),   # plain MO
            (0x40, False),   # concatenated MO
            (0x08, False),   # SME delivery acknowledgement: handset text, MO path
            (0x10, False),   # SME manual/user acknowledgement
        ],
    )
    def test_esm_class(self, esm_class: int, expected: bool) -> None:
        """The esm_class receipt bit (and the intermediate notification type) decide."""
        assert is_receipt({"esm_class": esm_class}) is expected

    @pytest.mark.parametrize("value", [None, "4", True, 4.0])
    def test_missing_or_odd_esm_class_is_mo(self, value: object) -> None:
        """Without an integer esm_class the deliver_sm is treated as an MO, never dropped."""
        fields = {} if value is None else {"esm_class": value}
        assert is_receipt(fields) is False


class TestParseStrict:
    def test_appendix_b(self) -> None:
        """A textbook Appendix B receipt is read field by field and marked strict."""
        r = parse_receipt({"esm_class": 4, "short_message": STANDARD})
        assert r == Receipt(
            message_id="0123456789", stat="DELIVRD", err="000", message_state=None,
            submit_date="2401011200", done_date="2401011201", text="Hello world",
            source="text", raw=STANDARD.decode(),
        )

    def test_capital_text_label(self) -> None:
        """Kannel-style "Text:" still counts as strict Appendix B."""
        r = parse_receipt({"short_message": STANDARD.replace(b"text:", b"Text:")})
        assert (r.source, r.text) == ("text", "Hello world")

    def test_trailing_nul_and_crlf(self) -> None:
        """C-string NULs and line ends around the text are not part of the receipt."""
        r = parse_receipt({"short_message": STANDARD + b"\x00\r\n"})
        assert (r.source, r.text) == ("text", "Hello world")

    def test_carrier_code_in_stat(self) -> None:
        """A 7-character carrier code fits the strict stat field."""
        raw = STANDARD.replace(b"stat:DELIVRD err:000", b"stat:MK:0024 err:024")
        r = parse_receipt({"short_message": raw})
        assert (r.source, r.stat, r.err) == ("text", "MK:0024", "024")


# (description, deliver_sm fields, expected (id, stat, err, state, submit, done, text, source))
SHAPES = [
    (
        "text only, 12-digit dates",
        {"short_message": b"id:1A2B3C sub:001 dlvrd:001 submit date:240101120000 "
                          b"done date:240101120105 stat:UNDELIV err:013 text:"},
        ("1A2B3C", "UNDELIV", "013", None, "240101120000", "240101120105", "", "tolerant"),
    ),
    (
        "text only, 14-digit dates",
        {"short_message": b"id:77 sub:001 dlvrd:000 submit date:20240101120000 "
                          b"done date:20240101120105 stat:EXPIRED err:000 text:x"},
        ("77", "EXPIRED", "000", None, "20240101120000", "20240101120105", "x", "tolerant"),
    ),
    (
        "mixed-case labels, no sub/dlvrd",
        {"short_message": b"ID:9F Submit Date:2401011200 Done Date:2401011201 Stat:REJECTD Err:001"},
        ("9F", "REJECTD", "001", None, "2401011200", "2401011201", "", "tolerant"),
    ),
    (
        "upper-case labels, underscores in date labels",
        {"short_message": b"ID:42 SUBMIT_DATE:2401011200 DONE_DATE:2401011201 STAT:DELIVRD"},
        ("42", "DELIVRD", "", None, "2401011200", "2401011201", "", "tolerant"),
    ),
    (
        "fields in another order, text in the middle",
        {"short_message": b"stat:DELIVRD text:hi id:5 err:000 done date:2401011201"},
        ("5", "DELIVRD", "000", None, "", "2401011201", "hi", "tolerant"),
    ),
    (
        "missing err and text",
        {"short_message": b"id:123 sub:001 dlvrd:001 submit date:2401011200 done date:2401011201 stat:DELIVRD"},
        ("123", "DELIVRD", "", None, "2401011200", "2401011201", "", "tolerant"),
    ),
    (
        "longer stat and garbage around",
        {"short_message": b"RPT>> id:555 stat:UNDELIVERABLE err:1 text:abc ## end"},
        ("555", "UNDELIVERABLE", "1", None, "", "", "abc ## end", "tolerant"),
    ),
    (
        "shorter stat, no spaces after colons stripped",
        {"short_message": b"id: 556 stat: DLV err: 0"},
        ("556", "DLV", "0", None, "", "", "", "tolerant"),
    ),
    (
        "carrier code written with a space after stat:",
        {"short_message": b"id:1 stat: ID:0076 err:0"},
        ("1", "ID:0076", "0", None, "", "", "", "tolerant"),
    ),
    (
        "text longer than 20 characters and containing labels",
        {"short_message": STANDARD.replace(b"Hello world", b"your code is 1234, id: 99 stat:x")},
        ("0123456789", "DELIVRD", "000", None, "2401011200", "2401011201",
         "your code is 1234, id: 99 stat:x", "tolerant"),
    ),
    (
        "text in message_payload, empty short_message",
        {"short_message": b"", "message_payload": STANDARD},
        ("0123456789", "DELIVRD", "000", None, "2401011200", "2401011201", "Hello world", "text"),
    ),
    (
        "useless short_message, receipt in message_payload",
        {"short_message": b"\x00", "message_payload": b"id:88 stat:DELIVRD"},
        ("88", "DELIVRD", "", None, "", "", "", "tolerant"),
    ),
    (
        "UCS-2 encoded receipt text",
        {"data_coding": 8, "short_message": "id:66 stat:DELIVRD err:000".encode("utf-16-be")},
        ("66", "DELIVRD", "000", None, "", "", "", "tolerant"),
    ),
    (
        "UCS-2 data_coding copied from the message, ASCII receipt text",
        {"data_coding": 8, "short_message": b"id:67 stat:DELIVRD err:000"},
        ("67", "DELIVRD", "000", None, "", "", "", "tolerant"),
    ),
    (
        "separators between fields",
        {"short_message": b"id:70;stat:DELIVRD;err:000"},
        ("70", "DELIVRD", "000", None, "", "", "", "tolerant"),
    ),
    (
        "dates written with separators",
        {"short_message": b"id:71 submit date:2024-01-01 12:00:00 done date:2024-01-01 12:01:05 stat:DELIVRD"},
        ("71", "DELIVRD", "", None, "20240101120000", "20240101120105", "", "tolerant"),
    ),
    (
        "TLVs only",
        {"receipted_message_id": "1A2B", "message_state": 2},
        ("1A2B", "DELIVRD", "", 2, "", "", "", "tlv"),
    ),
    (
        "TLVs only, with network_error_code",
        {"receipted_message_id": "1A2B", "message_state": 5, "network_error_code": b"\x03\x00\x0d"},
        ("1A2B", "UNDELIV", "3:013", 5, "", "", "", "tlv"),
    ),
    (
        "TLV id, carrier code only in the text stat",
        {"receipted_message_id": "00000000000000ff", "message_state": 5,
         "short_message": b"id:255 sub:001 dlvrd:000 submit date:2401011200 done date:2401011201"
                          b" stat:MK:0024 err:024 text:"},
        ("00000000000000ff", "MK:0024", "024", 5, "2401011200", "2401011201", "", "tlv"),
    ),
    (
        "TLV id and state, text without stat",
        {"receipted_message_id": "AB", "message_state": 3, "short_message": b"id:171 err:000"},
        ("AB", "EXPIRED", "000", 3, "", "", "", "tlv"),
    ),
    (
        "text err all zeros, TLV error says more",
        {"receipted_message_id": "AB", "message_state": 5, "network_error_code": b"\x03\x00\x01",
         "short_message": b"id:171 stat:UNDELIV err:000"},
        ("AB", "UNDELIV", "3:001", 5, "", "", "", "tlv"),
    ),
    (
        "TLV id written with a NUL and blanks",
        {"receipted_message_id": b" 1A2B\x00", "message_state": 2},
        ("1A2B", "DELIVRD", "", 2, "", "", "", "tlv"),
    ),
    (
        "unlisted message_state, no text",
        {"receipted_message_id": "1", "message_state": 9},
        ("1", "", "", 9, "", "", "", "tlv"),
    ),
]


# smpplib cannot encode these (both short_message and message_payload; a bytes C-string).
_CODEC_CANNOT_SEND = {"useless short_message, receipt in message_payload", "TLV id written with a NUL and blanks"}
_ENCODABLE = [s for s in SHAPES if s[0] not in _CODEC_CANNOT_SEND]


class TestParseShapes:
    @pytest.mark.parametrize(("fields", "expected"), [s[1:] for s in SHAPES], ids=[s[0] for s in SHAPES])
    def test_shape(self, fields: dict[str, object], expected: tuple[object, ...]) -> None:
        """Each real-world receipt shape yields the raw values the carrier wrote."""
        r = parse_receipt(fields)
        got = (r.message_id, r.stat, r.err, r.message_state, r.submit_date, r.done_date, r.text, r.source)
        assert got == expected

    @pytest.mark.parametrize(("fields", "expected"), [s[1:] for s in _ENCODABLE], ids=[s[0] for s in _ENCODABLE])
    def test_shape_through_codec(self, fields: dict[str, object], expected: tuple[object, ...]) -> None:
        """The same shapes parse identically after a real deliver_sm encode/decode."""
        r = parse_receipt(_round_trip({"esm_class": 4, **fields}))
        assert (r.message_id, r.stat, r.err, r.message_state) == expected[:4]

    def test_raw_kept(self) -> None:
        """The whole decoded receipt text is kept for the raw receipt log."""
        raw = b"RPT id:555 stat:UNDELIV"
        assert parse_receipt({"short_message": raw}).raw == raw.decode()

    def test_tlv_only_has_no_raw_text(self) -> None:
        """A TLV-only receipt has no text to keep."""
        assert parse_receipt({"receipted_message_id": "1", "message_state": 2}).raw == ""


class TestDialects:
    @pytest.mark.parametrize("carrier", ["cmcc", "cucc", "ctcc", "cbn", "intl"])
    def test_receipt_id_matches_submit_id(self, carrier: str) -> None:
        """Per profile, the receipt id canonicalises to the submit_sm_resp id's form."""
        profile = load_profiles()[0][carrier]
        number = 0x1234ABCD
        submit_id = format_message_id(profile.message_id_dialect, number)
        receipt_id = format_message_id(profile.receipt_id_dialect, number)
        text = (
            f"id:{receipt_id} sub:001 dlvrd:001 submit date:2401011200 "
            f"done date:2401011201 stat:DELIVRD err:000 text:"
        ).encode()
        fields: dict[str, object] = {"esm_class": 4}
        if profile.receipt_dialect in ("text", "text+tlv"):
            fields["short_message"] = text
        if profile.receipt_dialect == "payload":
            fields["message_payload"] = text
        if profile.receipt_dialect in ("tlv", "text+tlv"):
            fields["receipted_message_id"] = receipt_id
            fields["message_state"] = 2
        r = parse_receipt(_round_trip(fields))
        assert r.message_id == receipt_id
        assert r.canonical_id(profile.receipt_id_dialect) == canonical_message_id(
            profile.message_id_dialect, submit_id
        )

    @pytest.mark.parametrize(
        ("dialect", "written", "canonical"),
        [
            ("decimal", "000123", "123"),
            ("hex_upper", "7b", "123"),
            ("hex_lower_padded", "000000000000007B", "123"),
        ],
    )
    def test_case_and_padding(self, dialect: str, written: str, canonical: str) -> None:
        """Case and leading zeros in the receipt id do not change its canonical form."""
        r = parse_receipt({"short_message": f"id:{written} stat:DELIVRD".encode()})
        assert r.message_id == written
        assert r.canonical_id(dialect) == canonical


class TestParseErrors:
    @pytest.mark.parametrize(
        "fields",
        [
            {},
            {"esm_class": 4},
            {"short_message": b"stat:DELIVRD err:000"},
            {"short_message": b"hello, this is not a receipt"},
            {"short_message": b"id: stat:DELIVRD"},
            {"receipted_message_id": "\x00 ", "message_state": 2},
            {"message_state": 2, "network_error_code": b"\x03\x00\x00"},
        ],
    )
    def test_no_id(self, fields: dict[str, object]) -> None:
        """A receipt with no id anywhere raises ReceiptParseError saying so."""
        with pytest.raises(ReceiptParseError, match="no message id"):
            parse_receipt(fields)

    def test_not_a_mapping(self) -> None:
        """Anything but a field mapping is a ReceiptParseError, not a TypeError."""
        with pytest.raises(ReceiptParseError):
            parse_receipt(b"id:1 stat:DELIVRD")  # type: ignore[arg-type]

    def test_reason_does_not_leak_text(self) -> None:
        """The error reason never quotes the receipt text, which holds message content."""
        with pytest.raises(ReceiptParseError) as info:
            parse_receipt({"short_message": b"secret 123456"})
        assert "123456" not in str(info.value)


_RECEIPT_PIECES = st.sampled_from([
    "id:", "ID:", "Id :", "stat:", "Stat:", "err:", "text:", "Text:", "sub:", "dlvrd:",
    "submit date:", "done_date:", " ", "  ", ";", ",", "\x00", "\n", "DELIVRD", "MK:0024",
    "ID:0076", "0", "123", "1A2B", "2401011200", "20240101120000", ":", "stat: ID:", "é", "退订",
])
_RECEIPT_TEXT = st.lists(st.one_of(_RECEIPT_PIECES, st.text(max_size=8)), max_size=24).map("".join)
_ANY_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**40), max_value=2**40),
    st.binary(max_size=64), st.text(max_size=64), _RECEIPT_TEXT,
    _RECEIPT_TEXT.map(lambda s: s.encode("utf-8")), st.floats(allow_nan=True),
    st.lists(st.integers(), max_size=3),
)
_FIELDS = st.dictionaries(
    st.sampled_from([
        "short_message", "message_payload", "receipted_message_id", "message_state",
        "network_error_code", "esm_class", "data_coding",
    ]),
    _ANY_VALUE,
)


class TestParseProperties:
    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(fields=_FIELDS)
    def test_only_receipt_parse_error(self, fields: dict[str, object]) -> None:
        """Arbitrary field values either parse or raise ReceiptParseError, nothing else."""
        try:
            r = parse_receipt(fields)
        except ReceiptParseError:
            return
        assert r.message_id
        assert r.source in ("tlv", "text", "tolerant")

    @settings(max_examples=300, deadline=None)
    @given(data=st.one_of(st.binary(max_size=200), _RECEIPT_TEXT.map(lambda s: s.encode("utf-8"))))
    def test_arbitrary_bytes(self, data: bytes) -> None:
        """Arbitrary bytes as short_message or payload parse, map and round-trip, or raise ReceiptParseError."""
        status_map = StatusMap.load()
        for name in ("short_message", "message_payload"):
            try:
                r = parse_receipt({"esm_class": 4, name: data})
            except ReceiptParseError:
                continue
            assert receipt_from_json(receipt_to_json(r)) == r
            mapped = status_map.map(r)
            assert mapped.final is False or mapped.status in {
                "DELIVRD", "UNDELIV", "EXPIRED", "REJECTD", *status_map.pass_through,
            }


class TestReceiptDatetime:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("2401011230", datetime(2024, 1, 1, 12, 30)),
            ("240101123045", datetime(2024, 1, 1, 12, 30, 45)),
            ("202401011230", datetime(2024, 1, 1, 12, 30)),
            ("20240101123045", datetime(2024, 1, 1, 12, 30, 45)),
        ],
    )
    def test_lengths(self, text: str, expected: datetime) -> None:
        """10-, 12- and 14-digit receipt dates are read in the carrier's clock."""
        assert receipt_datetime(text) == expected

    @pytest.mark.parametrize("text", ["", "24010112", "2413011230", "abcdefghij", "２４０１０１１２３０"])
    def test_unreadable(self, text: str) -> None:
        """Wrong lengths, impossible dates and non-ASCII digits give None, not an error."""
        assert receipt_datetime(text) is None


class TestReceiptJson:
    def test_round_trip(self) -> None:
        """A receipt survives to_json/from_json unchanged, text or dict input."""
        r = parse_receipt({"receipted_message_id": "AB", "message_state": 5,
                           "short_message": "id:1 stat:MK:0024 text:café 退订 \n x".encode()})
        line = receipt_to_json(r)
        assert "\n" not in line and line.isascii()
        assert receipt_from_json(line) == r
        assert receipt_from_json(line.encode()) == r
        assert receipt_from_json(json.loads(line)) == r

    def test_lone_surrogate_round_trips(self) -> None:
        """Odd text from a str field still writes valid one-line JSON."""
        r = parse_receipt({"short_message": "id:1 stat:DELIVRD text:\ud800"})
        assert receipt_from_json(receipt_to_json(r)) == r

    def test_defaults_for_missing_keys(self) -> None:
        """Only message_id is required; replay files may omit the rest."""
        r = receipt_from_json('{"message_id": "9", "stat": "DELIVRD", "source": "text"}')
        assert (r.message_id, r.stat, r.err, r.message_state, r.raw) == ("9", "DELIVRD", "", None, "")

    @pytest.mark.parametrize(
        "obj",
        [
            "not json",
            b"\xff\xfe",
            "[1, 2]",
            '{"message_id": ""}',
            '{"message_id": 5, "source": "tlv"}',
            '{"message_id": "1", "source": "carrier"}',
            '{"message_id": "1", "source": "tlv", "message_state": "2"}',
            '{"message_id": "1", "source": "tlv", "message_state": true}',
            '{"v": 2, "message_id": "1", "source": "tlv"}',
            "[" * 100_000,
        ],
    )
    def test_bad_json(self, obj: str | bytes) -> None:
        """Malformed replay lines raise ReceiptParseError with the reason."""
        with pytest.raises(ReceiptParseError):
            receipt_from_json(obj)
