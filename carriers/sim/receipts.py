"""Delivery receipts (deliver_sm, esm_class 0x04) in each carrier's receipt dialect.

Dialects (``CarrierProfile.receipt_dialect``): ``text`` puts the SMPP 3.4 Appendix B
text in short_message; ``tlv`` sends only receipted_message_id, message_state and
network_error_code; ``text+tlv`` both; ``payload`` the text in message_payload with
an empty short_message. The id is written in ``receipt_id_dialect``, which may
differ from the submit_sm_resp id's base on purpose: real carriers do that.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from bridge.smpp.codec import Pdu
from carriers.profiles import CarrierProfile, format_message_id
from carriers.sim.stat import is_success, message_state

__all__ = ["ESM_RECEIPT", "AcceptedSubmit", "build_receipt", "receipt_text"]

ESM_RECEIPT = 0x04
_GSM_NETWORK = 3  # network_error_code type octet: 1 ANSI-136, 2 IS-95, 3 GSM
_TEXT_CHARS = 20


@dataclass(frozen=True, slots=True)
class AcceptedSubmit:
    """What a receipt needs to know about the submit_sm it reports on."""

    message_number: int
    source_addr: str
    source_addr_ton: int
    source_addr_npi: int
    destination_addr: str
    dest_addr_ton: int
    dest_addr_npi: int
    submitted_at: float
    text: str


def _stamp(epoch: float, utc_offset_h: float) -> str:
    return time.strftime("%y%m%d%H%M", time.gmtime(epoch + utc_offset_h * 3600))


def _preview(text: str) -> str:
    # The receipt travels as data_coding 0: keep it printable ASCII, whatever the message was.
    head = text[:_TEXT_CHARS]
    return "".join(ch if " " <= ch <= "~" else "?" for ch in head)


def receipt_text(receipt_id: str, submit: AcceptedSubmit, stat: str, err: str,
                 done_at: float, utc_offset_h: float) -> str:
    """The Appendix B receipt text, with 10-digit dates in the carrier's local time."""
    delivered = "001" if is_success(stat) else "000"
    return (
        f"id:{receipt_id} sub:001 dlvrd:{delivered} "
        f"submit date:{_stamp(submit.submitted_at, utc_offset_h)} "
        f"done date:{_stamp(done_at, utc_offset_h)} "
        f"stat:{stat} err:{err} text:{_preview(submit.text)}"
    )


def build_receipt(profile: CarrierProfile, submit: AcceptedSubmit, stat: str, err: str,
                  done_at: float, utc_offset_h: float) -> Pdu:
    """The receipt deliver_sm (sequence 0: the session numbers it when sending)."""
    receipt_id = format_message_id(profile.receipt_id_dialect, submit.message_number)
    fields: dict[str, object] = {
        "service_type": "",
        # The receipt comes "from" the handset and goes back to the original sender.
        "source_addr_ton": submit.dest_addr_ton,
        "source_addr_npi": submit.dest_addr_npi,
        "source_addr": submit.destination_addr,
        "dest_addr_ton": submit.source_addr_ton,
        "dest_addr_npi": submit.source_addr_npi,
        "destination_addr": submit.source_addr,
        "esm_class": ESM_RECEIPT,
        "data_coding": 0,
        "short_message": b"",
    }
    dialect = profile.receipt_dialect
    text = receipt_text(receipt_id, submit, stat, err, done_at, utc_offset_h).encode("ascii")
    if dialect in ("text", "text+tlv"):
        fields["short_message"] = text
    elif dialect == "payload":
        fields["message_payload"] = text
    if dialect in ("tlv", "text+tlv"):
        fields["receipted_message_id"] = receipt_id
        fields["message_state"] = message_state(stat)
        code = int(err) if err.isdigit() else 0
        if code:
            fields["network_error_code"] = bytes((_GSM_NETWORK,)) + code.to_bytes(2, "big")
    return Pdu("deliver_sm", 0, 0, fields)
