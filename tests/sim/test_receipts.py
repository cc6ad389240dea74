"""Receipt deliver_sm per receipt dialect, id dialect and stat."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from bridge.smpp.codec import decode, encode
from carriers.profiles import load_profiles
from carriers.sim.receipts import AcceptedSubmit, build_receipt, receipt_text

PROFILES, _ = load_profiles()
# 2024-03-05 01:02:03 UTC, shown as 2403050902 in UTC+8.
SUBMITTED = 1709600523.0
SUBMIT = AcceptedSubmit(
    message_number=255, source_addr="10690001", source_addr_ton=5, source_addr_npi=0,
    destination_addr="13800138000", dest_addr_ton=1, dest_addr_npi=1,
    submitted_at=SUBMITTED, text="验证码 123456, valid for 5 minutes",
)
TEXT_RE = re.compile(
    r"^id:(?P<id>\S+) sub:001 dlvrd:(?P<dlvrd>\d{3}) submit date:(?P<sd>\d{10}) "
    r"done date:(?P<dd>\d{10}) stat:(?P<stat>\S{1,7}) err:(?P<err>\d{3}) text:(?P<text>.{0,20})$")


def _roundtrip(pdu):
    """Receipts must survive the wire codec unchanged."""
    return decode(encode(replace(pdu, sequence=9)))


class TestText:
    def test_format_and_local_dates(self):
        """The Appendix B text has 10-digit dates in the carrier's local time and a 20-char ASCII preview."""
        text = receipt_text("FF", SUBMIT, "DELIVRD", "000", SUBMITTED + 125, 8.0)
        m = TEXT_RE.match(text)
        assert m, text
        assert (m["id"], m["dlvrd"], m["sd"], m["dd"]) == ("FF", "001", "2403050902", "2403050904")
        assert m["text"] == "??? 123456, valid fo"

    def test_failure_has_dlvrd_000(self):
        """A failed message reports dlvrd:000 and keeps the carrier code in stat."""
        m = TEXT_RE.match(receipt_text("1", SUBMIT, "MK:0024", "024", SUBMITTED, 8.0))
        assert (m["dlvrd"], m["stat"], m["err"]) == ("000", "MK:0024", "024")


class TestDialects:
    def test_cmcc_text_and_tlv_with_hex_receipt_id(self):
        """cmcc: text + TLVs, the receipt id in upper-case hex (submit_sm_resp used decimal)."""
        pdu = _roundtrip(build_receipt(PROFILES["cmcc"], SUBMIT, "UNDELIV", "005", SUBMITTED, 8.0))
        assert pdu.get("esm_class") == 0x04
        assert TEXT_RE.match(pdu.get("short_message").decode())["id"] == "FF"
        assert pdu.get("receipted_message_id") == "FF"
        assert pdu.get("message_state") == 5
        assert pdu.get("network_error_code") == b"\x03\x00\x05"

    def test_cucc_text_only(self):
        """cucc: text only, no TLVs."""
        pdu = _roundtrip(build_receipt(PROFILES["cucc"], SUBMIT, "DELIVRD", "000", SUBMITTED, 8.0))
        assert TEXT_RE.match(pdu.get("short_message").decode())["id"] == "FF"
        assert pdu.get("receipted_message_id") is None and pdu.get("message_state") is None

    def test_ctcc_tlv_only_with_decimal_id(self):
        """ctcc: TLVs only with an empty short_message; id decimal (submit_sm_resp used padded hex)."""
        pdu = _roundtrip(build_receipt(PROFILES["ctcc"], SUBMIT, "MK:0024", "024", SUBMITTED, 8.0))
        assert pdu.get("short_message") == b""
        assert pdu.get("receipted_message_id") == "255"
        assert pdu.get("message_state") == 5
        assert pdu.get("network_error_code") == b"\x03\x00\x18"

    def test_cbn_payload_with_uuid(self):
        """cbn: the text in message_payload, short_message empty, id as a UUID."""
        pdu = _roundtrip(build_receipt(PROFILES["cbn"], SUBMIT, "MBBLACK", "008", SUBMITTED, 8.0))
        assert pdu.get("short_message") == b""
        m = TEXT_RE.match(pdu.get("message_payload").decode())
        assert m["id"] == "00000000-0000-0000-0000-0000000000ff"
        assert m["stat"] == "MBBLACK"

    def test_intl_padded_hex(self):
        """intl: text + TLVs with 16-digit lower-case hex ids."""
        pdu = _roundtrip(build_receipt(PROFILES["intl"], SUBMIT, "DELIVRD", "000", SUBMITTED, 0.0))
        assert pdu.get("receipted_message_id") == "00000000000000ff"
        assert pdu.get("message_state") == 2
        assert pdu.get("network_error_code") is None

    @pytest.mark.parametrize("carrier", ["cmcc", "cucc", "ctcc", "cbn", "intl"])
    def test_addresses_swap(self, carrier):
        """The receipt comes from the recipient and goes to the submit's source, TON/NPI included."""
        pdu = _roundtrip(build_receipt(PROFILES[carrier], SUBMIT, "DELIVRD", "000", SUBMITTED, 8.0))
        assert (pdu.get("source_addr"), pdu.get("source_addr_ton"), pdu.get("source_addr_npi")) == (
            "13800138000", 1, 1)
        assert (pdu.get("destination_addr"), pdu.get("dest_addr_ton")) == ("10690001", 5)
