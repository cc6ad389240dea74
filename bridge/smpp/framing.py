"""Framing by ``command_length`` and dispatch of whole PDUs, shared by ESME and SMSC sides.

A frame whose length is outside 16..64 KiB cannot be resynchronised: the peer gets a
generic_nack and the connection is closed. A frame of good length that does not decode
gets a generic_nack carrying the decoder's status and the stream carries on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import structlog
from smpplib import consts
from twisted.internet.interfaces import IPushProducer, ISSLTransport
from twisted.internet.protocol import Protocol
from zope.interface import implementer

from bridge.smpp.codec import (
    HEADER,
    MAX_PDU_LENGTH,
    MIN_PDU_LENGTH,
    DecodeError,
    Pdu,
    SequenceCounter,
    decode,
    encode,
)

__all__ = ["SmppFramedProtocol"]

PduHandler = Callable[[Pdu], None]


@implementer(IPushProducer)
class _ReadPause:
    """Pauses reading from the peer while what we owe it cannot be written."""

    def __init__(self, transport: Any) -> None:
        self._transport = transport

    def pauseProducing(self) -> None:  # noqa: N802 (Twisted API)
        self._transport.pauseProducing()

    def resumeProducing(self) -> None:  # noqa: N802 (Twisted API)
        self._transport.resumeProducing()

    def stopProducing(self) -> None:  # noqa: N802 (Twisted API)
        pass


class SmppFramedProtocol(Protocol):
    """Base protocol: subclasses fill ``handlers`` with ``{command_name: method}``."""

    max_pdu_length = MAX_PDU_LENGTH
    log = structlog.get_logger("smpp")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.sequences = SequenceCounter()
        self.handlers: dict[str, PduHandler] = {}
        self.pdus_in = 0
        self.pdus_out = 0
        self.decode_errors = 0

    def connectionMade(self) -> None:  # noqa: N802 (Twisted API)
        set_nodelay = getattr(self.transport, "setTcpNoDelay", None)
        if set_nodelay is not None:
            with contextlib.suppress(OSError):
                set_nodelay(True)
        # A peer that sends requests but never reads our answers would make the write
        # buffer grow without bound; as a streaming producer the transport stops reading
        # it while the buffer is over its limit and resumes once it drains.
        # (Not over TLS: the TLS layer drives its own producer during the handshake.)
        if not ISSLTransport.providedBy(self.transport):
            with contextlib.suppress(RuntimeError, AttributeError):
                self.transport.registerProducer(_ReadPause(self.transport), True)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted API)
        buf = self._buffer
        buf += data
        while len(buf) >= 4:
            length = int.from_bytes(buf[:4], "big")
            if length < MIN_PDU_LENGTH or length > self.max_pdu_length:
                self._unframeable(length)
                return
            if len(buf) < length:
                return
            frame = bytes(buf[:length])
            del buf[:length]
            self._frame_received(frame)
            if self.transport is None or getattr(self.transport, "disconnecting", False):
                return

    def _frame_received(self, frame: bytes) -> None:
        self.pdus_in += 1
        try:
            pdu = decode(frame)
        except DecodeError as exc:
            self.decode_errors += 1
            self.log.warning("pdu.undecodable", reason=exc.reason, status=exc.status,
                             command_id=exc.command_id, seq=exc.sequence)
            self.undecodable_pdu(exc)
            return
        handler = self.handlers.get(pdu.command)
        if handler is None:
            self.unhandled_pdu(pdu)
            return
        handler(pdu)

    def _unframeable(self, length: int) -> None:
        self.decode_errors += 1
        seq = None
        if len(self._buffer) >= MIN_PDU_LENGTH:
            seq = HEADER.unpack_from(self._buffer)[3]
        self.log.warning("pdu.bad_length", command_length=length, seq=seq)
        self._buffer.clear()
        self.send_pdu(Pdu("generic_nack", seq or 0, consts.SMPP_ESME_RINVCMDLEN))
        self.transport.loseConnection()

    def undecodable_pdu(self, exc: DecodeError) -> None:
        """Default: nack requests; a response we cannot read is only logged."""
        if exc.command_id is not None and exc.command_id & 0x80000000:
            return
        self.send_pdu(Pdu("generic_nack", exc.sequence or 0, exc.status))

    def unhandled_pdu(self, pdu: Pdu) -> None:
        if not pdu.is_response:
            self.send_pdu(Pdu("generic_nack", pdu.sequence, consts.SMPP_ESME_RINVCMDID))

    def send_pdu(self, pdu: Pdu) -> None:
        if self.transport is None:
            return
        self.pdus_out += 1
        self.transport.write(encode(pdu))

    def respond(self, request: Pdu, status: int = 0, **fields: object) -> None:
        """Answer ``request`` with its ``*_resp`` carrying the same sequence number."""
        self.send_pdu(Pdu(request.command + "_resp", request.sequence, status, dict(fields)))

    def request(self, command: str, **fields: object) -> Pdu:
        """Send a new request PDU with the next sequence number and return it."""
        pdu = Pdu(command, self.sequences.next(), 0, dict(fields))
        self.send_pdu(pdu)
        return pdu
