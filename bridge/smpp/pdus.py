"""Field sets of the requests an ESME sends: bind_* and submit_sm from typed inputs.

Addresses: ``+<digits>`` is sent as international E.164 (TON 1, NPI 1) without the
plus; other all-digit addresses (channel numbers such as 1069...) as TON 0 / NPI 1;
anything else (an alphanumeric sender) as TON 5 / NPI 0. A body longer than 254
octets, which short_message cannot carry, goes into message_payload.
"""

from __future__ import annotations

from typing import Any

from bridge.smpp.config import BindConfig
from bridge.smpp.types import OutboundSegment

__all__ = ["address_fields", "bind_fields", "submit_fields"]

_SHORT_MESSAGE_MAX = 254


def address_fields(address: str) -> tuple[int, int, str]:
    """``(ton, npi, digits)`` for an address as the platform writes it."""
    if address.startswith("+") and address[1:].isdigit():
        return 1, 1, address[1:]
    if address.isdigit():
        return 0, 1, address
    return 5, 0, address


def bind_fields(config: BindConfig) -> dict[str, Any]:
    return {
        "system_id": config.system_id,
        "password": config.password,
        "system_type": config.system_type,
        "interface_version": 0x34,
        "addr_ton": 0,
        "addr_npi": 0,
        "address_range": config.address_range,
    }


def submit_fields(segment: OutboundSegment, service_type: str = "") -> dict[str, Any]:
    src_ton, src_npi, src = address_fields(segment.source_addr)
    dst_ton, dst_npi, dst = address_fields(segment.destination_addr)
    fields: dict[str, Any] = {
        "service_type": service_type,
        "source_addr_ton": src_ton,
        "source_addr_npi": src_npi,
        "source_addr": src,
        "dest_addr_ton": dst_ton,
        "dest_addr_npi": dst_npi,
        "destination_addr": dst,
        "esm_class": segment.esm_class,
        "registered_delivery": segment.registered_delivery,
        "data_coding": segment.data_coding,
    }
    if len(segment.short_message) > _SHORT_MESSAGE_MAX:
        fields["short_message"] = b""
        fields["message_payload"] = segment.short_message
    else:
        fields["short_message"] = segment.short_message
    if segment.sar is not None:
        ref, total, seq = segment.sar
        fields["sar_msg_ref_num"] = ref
        fields["sar_total_segments"] = total
        fields["sar_segment_seqnum"] = seq
    return fields
