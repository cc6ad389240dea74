"""tools/kannel_ref.py: Kannel against the simulator, every delivery report back at the receiver."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tools.bench import _ReceiverState
from tools.kannel_ref import main

needs_kannel = pytest.mark.skipif(shutil.which("bearerbox") is None and not Path("/usr/sbin/bearerbox").exists(),
                                  reason="Kannel is not installed (apt-get install kannel; .ci/run does)")


def test_receiver_counts_kannel_reports_by_id_and_final_type_only() -> None:
    state = _ReceiverState()
    assert state.handle("GET", "/dlr?id=%2B8613000000001&type=8", b"") == (200, b"{}")   # SMSC accepted: not final
    assert state.handle("GET", "/dlr?id=%2B8613000000001&type=1", b"")[0] == 200
    assert state.handle("GET", "/dlr?id=%2B8613000000002&type=2", b"")[0] == 200
    summary = json.loads(state.handle("GET", "/summary", b"")[1])
    assert summary["distinct"] == 2 and summary["pushes"] == 2
    assert summary["statuses"] == {"DELIVRD": 1, "UNDELIV": 1}
    assert set(json.loads(state.handle("GET", "/ids", b"")[1])) == {"+8613000000001", "+8613000000002"}


@needs_kannel
def test_kannel_delivers_every_message_and_reports_its_cpu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "kannel.json"
    assert main(["--messages", "300", "--concurrency", "4", "--latency-messages", "100", "--rate", "200",
                 "--json-out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["accepted"] == 300 and result["reports"] == 300
    assert result["latency_messages"] == 100   # every paced request matched to its submit_sm
    assert 0 < result["latency_p50_ms"] <= result["latency_p99_ms"]
    assert result["cpu_ms_per_msg"] > 0 and result["ratio"] > 0 and result["peak_rss_mb"] > 0
    assert "300 of 300 reports" in capsys.readouterr().out
