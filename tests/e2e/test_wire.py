"""Wire conformance: tshark, an independent SMPP decoder, reads what crossed the wire."""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from tests.e2e.harness import Bridge, BridgeOptions, Receiver, wait_for

TSHARK = shutil.which("tshark")
EXPERT_WARNING = 0x600000   # tshark severities: chat 0x200000, note 0x400000, warn 0x600000, error 0x800000
# Expert group of TCP sequence analysis (retransmissions, D-SACK): the kernel's doing on a loaded loopback,
# not something the bridge or the simulator wrote, so it is not judged here.
TCP_SEQUENCE_GROUP = 0x02000000
FIELDS = ("frame.number", "tcp.len", "tcp.reassembled_in", "smpp.command_id", "_ws.malformed",
          "_ws.expert.severity", "_ws.expert.group", "tcp.analysis.retransmission",
          "gsm_sms.udh.mm.msg_id", "gsm_sms.udh.mm.msg_parts", "gsm_sms.udh.mm.msg_part",
          "smpp.sar_msg_ref_num", "smpp.sar_total_segments", "smpp.sar_segment_seqnum")

pytestmark = pytest.mark.skipif(
    TSHARK is None, reason="tshark is not installed (CI installs it with apt-get; `apt-get install tshark`)")


def _capture(tmp: Path, ports: list[int]) -> tuple[subprocess.Popen[bytes], Path]:
    pcap = tmp / "smpp.pcap"
    err = tmp / "tshark.err"
    filt = " or ".join(f"tcp port {p}" for p in ports)
    proc = subprocess.Popen([TSHARK, "-i", "lo", "-f", filt, "-w", str(pcap)],
                            stdout=subprocess.DEVNULL, stderr=err.open("wb"))
    wait_for(lambda: "Capturing on" in err.read_text(errors="replace") or proc.poll() is not None,
             timeout=30, what="tshark to start capturing")
    if proc.poll() is not None:
        pytest.skip(f"tshark cannot capture here: {err.read_text(errors='replace')[-300:]}")
    return proc, pcap


def _decode(pcap: Path, ports: list[int]) -> list[dict[str, list[str]]]:
    args = [TSHARK, "-r", str(pcap)]
    for p in ports:
        args += ["-d", f"tcp.port=={p},smpp"]
    args += ["-T", "fields", "-E", "separator=\t", "-E", "occurrence=a", "-E", "aggregator=,"]
    for f in FIELDS:
        args += ["-e", f]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120, check=True).stdout
    rows = []
    for line in out.splitlines():
        cols = line.split("\t")
        rows.append({f: [v for v in (cols[i] if i < len(cols) else "").split(",") if v]
                     for i, f in enumerate(FIELDS)})
    return rows


def test_everything_on_the_wire_is_well_formed_smpp(tmp_path: Path, receiver: Receiver) -> None:
    """Every frame between daemon and simulator decodes as SMPP; no malformed PDU, no expert warning."""
    bridge = Bridge(tmp_path, receiver, BridgeOptions(external_sim=True))
    try:
        ports = list(bridge.sim_ready["ports"].values())
        tshark, pcap = _capture(tmp_path, ports)
        bridge.start()
        ids = []
        ids += [r["smsMsgId"] for r in bridge.send(["+8613812360001", "+8613812360002"])["result"]]
        for number, text in (("+8613812360003", "长" * 140), ("+8613312360004", "电" * 150),
                             ("+8619212360005", "广" * 100), ("+447700900555", "long English text " * 12)):
            ids.append(bridge.send([number], body=text)["result"][0]["smsMsgId"])
        status, _ = bridge.sim("POST", "/mo", {"carrier": "cmcc", "from": "8613812360006", "to": "10690001",
                                               "text": "回复" * 80})
        assert status == 200
        wait_for(lambda: all(receiver.reports_for(m) for m in ids), what="all reports")
        wait_for(lambda: receiver.acked("/uplink"), what="uplink")
        assert bridge.stop() == 0
        # The capture lags the wire a little: wait until it holds every bind's unbind_resp.
        wait_for(lambda: sum(c == "0x80000006" for r in _decode(pcap, ports) for c in r["smpp.command_id"]) >= 5,
                 timeout=30, interval=0.2, what="the unbinds in the capture")
        tshark.send_signal(signal.SIGINT)
        tshark.wait(30)
    finally:
        bridge.close()

    rows = _decode(pcap, ports)
    commands = Counter(c for r in rows for c in r["smpp.command_id"])
    for cmd in ("0x00000009", "0x80000009", "0x00000004", "0x80000004", "0x00000005", "0x80000005",
                "0x00000006", "0x80000006"):
        assert commands[cmd] > 0, f"no {cmd} on the wire: {commands}"
    for r in rows:
        payload = int(r["tcp.len"][0]) if r["tcp.len"] else 0
        if payload and not r["tcp.analysis.retransmission"]:
            # A retransmitted segment repeats bytes already dissected from the original; tshark leaves it raw.
            assert r["smpp.command_id"] or r["tcp.reassembled_in"], f"frame {r['frame.number']} is not SMPP"
        assert not r["_ws.malformed"], f"frame {r['frame.number']} is malformed"
        worst = max((int(s) for s, g in zip(r["_ws.expert.severity"], r["_ws.expert.group"], strict=True)
                     if int(g) != TCP_SEQUENCE_GROUP), default=0)
        assert worst < EXPERT_WARNING, f"frame {r['frame.number']} has an expert warning ({worst:#x})"

    udh_parts: dict[tuple[str, str], Counter[int]] = defaultdict(Counter)
    for r in rows:
        for ref, total, seq in zip(r["gsm_sms.udh.mm.msg_id"], r["gsm_sms.udh.mm.msg_parts"],
                                   r["gsm_sms.udh.mm.msg_part"], strict=True):
            udh_parts[(ref, total)][int(seq)] += 1
    assert udh_parts, "no concatenated messages seen"
    for (ref, total), parts in udh_parts.items():
        assert set(parts) == set(range(1, int(total) + 1)), f"UDH ref {ref}: parts {sorted(parts)} of {total}"
        assert len(set(parts.values())) == 1, f"UDH ref {ref}: uneven parts {parts}"
    sar = [(ref, total, seq) for r in rows for ref, total, seq in zip(
        r["smpp.sar_msg_ref_num"], r["smpp.sar_total_segments"], r["smpp.sar_segment_seqnum"], strict=True)]
    assert sorted(int(s) for _, _, s in sar) == [1, 2] and len({(a, b) for a, b, _ in sar}) == 1
