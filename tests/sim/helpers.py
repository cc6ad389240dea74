"""Test doubles for the simulator: a config builder and an ESME over StringTransport."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from bridge.smpp.codec import HEADER, Pdu, decode, encode
from carriers.sim.config import SimConfig, load_config
from carriers.sim.simulator import Simulator
from carriers.sim.smsc import SmscSession

__all__ = ["FakeEsme", "build_config", "frames", "make_simulator"]

PASSWORDS = {"cmcc": "cmcc-pw", "cucc": "cucc-pw", "ctcc": "ctcc-pw", "cbn": "cbn-pw", "intl": "intl-pw"}


def build_config(tmp_path: Path, toml: str = "") -> SimConfig:
    """Load a config from ``toml`` (an override file body)."""
    path = tmp_path / "sim.toml"
    path.write_text(toml, encoding="utf-8")
    return load_config(path)


def make_simulator(tmp_path: Path, toml: str = "", clock: Clock | None = None) -> tuple[Simulator, Clock]:
    clock = clock or Clock()
    return Simulator(build_config(tmp_path, toml), clock), clock


def frames(data: bytes) -> list[Pdu]:
    """Decode every whole frame in ``data``."""
    out = []
    while len(data) >= 16:
        length = HEADER.unpack_from(data)[0]
        out.append(decode(data[:length]))
        data = data[length:]
    return out


class FakeEsme:
    """One ESME connection to a carrier, driven synchronously over StringTransport."""

    def __init__(self, sim: Simulator, carrier: str) -> None:
        self.carrier = sim.carriers[carrier]
        self.session: SmscSession = self.carrier.buildProtocol(None)
        self.transport = StringTransport()
        self.session.makeConnection(self.transport)
        self._seq = 0
        self._backlog: list[Pdu] = []

    def send(self, command: str, **fields: object) -> int:
        self._seq += 1
        self.session.dataReceived(encode(Pdu(command, self._seq, 0, dict(fields))))
        return self._seq

    def send_raw(self, data: bytes) -> None:
        self.session.dataReceived(data)

    def answer(self, request: Pdu, status: int = 0) -> None:
        self.session.dataReceived(encode(Pdu(request.command + "_resp", request.sequence, status, {})))

    def received(self) -> list[Pdu]:
        """PDUs the simulator wrote since the last call."""
        data = self.transport.value()
        self.transport.clear()
        out, self._backlog = self._backlog + frames(data), []
        return out

    def bind(self, kind: str = "transceiver", system_id: str | None = None,
             password: str | None = None) -> Pdu:
        cid = self.carrier.id
        self.send(f"bind_{kind}", system_id=system_id if system_id is not None else cid,
                  password=password if password is not None else PASSWORDS[cid],
                  system_type="", interface_version=0x34)
        resp, *self._backlog = self.received()
        return resp

    def submit(self, to: str = "13800138000", text: bytes = b"hello", registered_delivery: int = 1,
               **extra: object) -> int:
        fields: dict[str, object] = {
            "source_addr": "10690001", "destination_addr": to, "short_message": text,
            "registered_delivery": registered_delivery, "data_coding": 0,
        }
        fields.update(extra)
        return self.send("submit_sm", **fields)

    @property
    def closed(self) -> bool:
        return self.transport.disconnecting or self.transport.disconnected
