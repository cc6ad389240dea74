"""Every submit_sm the simulator received, decoded, in a bounded ring buffer.

Tests and operators read this through ``GET /submits`` to see exactly what an ESME
sent (coding, UDH or SAR fields, text). The buffer keeps the newest
``submits_log_size`` records; ``index`` keeps counting across the whole run, so a
reader polling with ``since=<next>`` never sees a record twice and can tell when it
missed some.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from bridge.smpp.codec import Pdu
from bridge.textcodec import ConcatInfo, decode_short_message, split_udh

__all__ = ["DecodedText", "SarInfo", "SubmitLog", "SubmitRecord", "decode_text"]


@dataclass(frozen=True, slots=True)
class SarInfo:
    """The SAR TLVs of a segment sent without UDH."""

    ref: int
    total: int
    seq: int


@dataclass(frozen=True, slots=True)
class DecodedText:
    """The text of a submit_sm (or deliver_sm) and how it was split, if it was."""

    udh: ConcatInfo | None
    sar: SarInfo | None
    text: str


def decode_text(pdu: Pdu, dc0: str) -> DecodedText:
    """Decode short_message (or message_payload when it is empty) with the carrier's dc0."""
    data = pdu.get("short_message") or pdu.get("message_payload") or b""
    esm_class = pdu.get("esm_class", 0)
    udh, payload = split_udh(bytes(data), esm_class)
    sar = None
    if pdu.get("sar_msg_ref_num") is not None:
        sar = SarInfo(pdu.get("sar_msg_ref_num"), pdu.get("sar_total_segments", 0) or 0,
                      pdu.get("sar_segment_seqnum", 0) or 0)
    return DecodedText(udh, sar, decode_short_message(payload, pdu.get("data_coding", 0), dc0))


@dataclass(frozen=True, slots=True)
class SubmitRecord:
    """One received submit_sm and how the simulator answered it.

    ``status`` is the submit_sm_resp command_status, or ``None`` when it was not
    answered (``no_response`` fault) or answered with generic_nack (``nack``).
    """

    index: int
    carrier: str
    system_id: str
    source_addr: str
    destination_addr: str
    data_coding: int
    esm_class: int
    registered_delivery: int
    decoded: DecodedText
    message_id: str | None
    status: int | None
    time: float

    def as_json(self) -> dict[str, object]:
        udh = self.decoded.udh
        sar = self.decoded.sar
        return {
            "index": self.index,
            "carrier": self.carrier,
            "system_id": self.system_id,
            "source_addr": self.source_addr,
            "destination_addr": self.destination_addr,
            "data_coding": self.data_coding,
            "esm_class": self.esm_class,
            "registered_delivery": self.registered_delivery,
            "udh": None if udh is None else {"ref": udh.ref, "total": udh.total, "seq": udh.seq,
                                             "ref_bits": udh.ref_bits},
            "sar": None if sar is None else {"ref": sar.ref, "total": sar.total, "seq": sar.seq},
            "text": self.decoded.text,
            "message_id": self.message_id,
            "status": self.status,
            "time": self.time,
        }


class SubmitLog:
    """Ring buffer of :class:`SubmitRecord` with a running count."""

    def __init__(self, size: int) -> None:
        self._records: deque[SubmitRecord] = deque(maxlen=size)
        self.total = 0

    def next_index(self) -> int:
        return self.total

    def append(self, record: SubmitRecord) -> None:
        self._records.append(record)
        self.total += 1

    @property
    def first_index(self) -> int:
        """Index of the oldest record still held."""
        return self.total - len(self._records)

    def since(self, index: int = 0, carrier: str | None = None,
              accepted_only: bool = False) -> Iterator[SubmitRecord]:
        """Records with ``index`` or later, oldest first, optionally filtered."""
        skip = max(0, index - self.first_index)
        for record in itertools.islice(self._records, skip, None):
            if carrier is not None and record.carrier != carrier:
                continue
            if accepted_only and record.status != 0:
                continue
            yield record

    def clear(self) -> None:
        """Forget the records; ``total`` keeps counting so indices are never reused."""
        self._records.clear()
