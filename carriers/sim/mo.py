"""MO (handset -> application) deliver_sm PDUs, split and encoded like a real handset's.

Encoding and splitting come from ``bridge.encoder`` so the simulator and the bridge
agree on UDH layouts and sizes; a carrier that joins with SAR gets the SAR TLVs
instead of a UDH. ``order`` lets a test send the parts out of sequence, or only some of
them; with ``ref`` pinned, a later request can send the rest of the same reply.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.encoder import ConcatRefCounter, MessageTooLongError, encode_message
from bridge.smpp.codec import Pdu
from carriers.profiles import CarrierProfile

__all__ = ["MoError", "MoRequest", "build_mo"]


class MoError(ValueError):
    """An MO request that cannot be turned into deliver_sm; the message names the field."""


@dataclass(frozen=True, slots=True)
class MoRequest:
    """One uplink message as the control API received it."""

    carrier: str
    source: str
    destination: str
    text: str
    concat: str | None = None
    order: tuple[int, ...] | None = None
    ref: int | None = None


def _address(number: str) -> tuple[str, int, int]:
    """(address, ton, npi): ``+`` means an international E.164 number."""
    if number.startswith("+"):
        return number[1:], 1, 1
    return number, 0, 1


def build_mo(profile: CarrierProfile, request: MoRequest, refs: ConcatRefCounter) -> tuple[Pdu, ...]:
    """The deliver_sm templates (sequence 0) for ``request``, in sending order."""
    concat = request.concat or profile.concat
    if request.ref is not None:
        refs = ConcatRefCounter(capacity=1, start=request.ref)
    try:
        encoded = encode_message(request.text, destination=request.destination,
                                 mainland=profile.country_code != "*", concat=concat, refs=refs)
    except MessageTooLongError as exc:
        raise MoError(f"text: {exc}") from None
    except ValueError as exc:
        raise MoError(f"text or concat: {exc}") from None
    source, s_ton, s_npi = _address(request.source)
    destination, d_ton, d_npi = _address(request.destination)
    pdus: dict[int, Pdu] = {}
    for segment in encoded.segments:
        fields: dict[str, object] = {
            "service_type": "",
            "source_addr_ton": s_ton, "source_addr_npi": s_npi, "source_addr": source,
            "dest_addr_ton": d_ton, "dest_addr_npi": d_npi, "destination_addr": destination,
            "esm_class": segment.esm_class,
            "data_coding": segment.data_coding,
            "short_message": segment.short_message,
        }
        if segment.sar and segment.ref is not None:
            fields["sar_msg_ref_num"] = segment.ref
            fields["sar_total_segments"] = segment.total
            fields["sar_segment_seqnum"] = segment.seq
        pdus[segment.seq] = Pdu("deliver_sm", 0, 0, fields)
    order = request.order or tuple(sorted(pdus))
    if not order or len(set(order)) != len(order) or not set(order) <= set(pdus):
        raise MoError(f"order: expected distinct part numbers within 1..{len(pdus)}, got {list(order)}")
    return tuple(pdus[seq] for seq in order)
