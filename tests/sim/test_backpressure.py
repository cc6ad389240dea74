"""A peer that sends requests but never reads the answers must not grow the server's memory."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sim.simproc import SimProcess


@pytest.fixture(name="sim")
def _sim(tmp_path: Path) -> Iterator[SimProcess]:
    cfg = tmp_path / "sim.toml"
    cfg.write_text("[sim]\ncontrol_port = 0\n" + "".join(
        f"[sim.carriers.{c}]\nport = 0\n" for c in ("cmcc", "cucc", "ctcc", "cbn", "intl")), encoding="utf-8")
    proc = SimProcess(cfg, tmp_path / "sim.log")
    yield proc
    proc.stop()


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_server_stops_reading_a_peer_that_never_reads(sim: SimProcess) -> None:
    """Flooding enquire_link without reading replies stalls the sender instead of filling the server's RAM."""
    before = _rss_mb(sim.proc.pid)
    chunk = b"".join(struct.pack(">LLLL", 16, 0x15, 0, seq) for seq in range(1, 4097))  # 64 KiB
    sent = 0
    with socket.create_connection(("127.0.0.1", sim.ports["cmcc"])) as sock:
        sock.setblocking(False)
        stalled_since = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and sent < 40 * 1024 * 1024:
            try:
                sent += sock.send(chunk)
                stalled_since = None
            except BlockingIOError:
                stalled_since = stalled_since or time.monotonic()
                if time.monotonic() - stalled_since > 1.0:
                    break   # the server stopped reading: back-pressure works
                time.sleep(0.01)
        grown = _rss_mb(sim.proc.pid) - before
        assert sent < 40 * 1024 * 1024, "the server kept reading 40 MiB it could not answer"
        assert grown < 30, f"server RSS grew by {grown:.0f} MB"
    # Other binds are unaffected: the control API (same reactor) still answers.
    assert sim.api("GET", "/stats")[0] == 200
