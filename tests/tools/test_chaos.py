"""The chaos run in its small modes (one daemon; a cluster of three): faults, kill -9s, a receiver
outage, and no loss."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.pgserver import PgServer

ROOT = Path(__file__).resolve().parents[2]


def test_small_chaos_run_loses_nothing(tmp_path: Path) -> None:
    """The receiver gets a report of every accepted message and every MO despite the chaos."""
    out = tmp_path / "chaos.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "chaos.py"), "--messages", "300", "--rate", "100", "--kills", "2",
         "--mo", "8", "--settle-timeout", "90", "--json-out", str(out)],
        capture_output=True, text=True, timeout=240, cwd=tmp_path)
    print(done.stdout[-3000:])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["lost"] is False and result["kills"] == 2
    assert result["messages_accepted"] == 300 and result["final"] == 300
    assert result["mo_injected"] == 8 and result["mo_missing"] == 0
    assert result["unflagged_duplicates"] == 0
    # Counted at the receiver: one report per message (any resend has the same webhook-id).
    assert result["missing_reports"] == 0 and result["conflicting_reports"] == 0
    assert result["pushes_without_webhook_id"] == 0


def test_small_cluster_chaos_run_loses_nothing(tmp_path: Path, pg_server: PgServer) -> None:
    """Three members on one PostgreSQL, two of them killed in turn and kept dead past the
    failover time: nothing lost, and never more binds to a carrier than configured."""
    out = tmp_path / "chaos.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "chaos.py"), "--cluster", "3", "--store-url", pg_server.new_database(),
         "--failover-s", "2", "--messages", "300", "--rate", "100", "--kills", "2", "--mo", "8",
         "--settle-timeout", "90", "--json-out", str(out)],
        capture_output=True, text=True, timeout=240, cwd=tmp_path)
    print(done.stdout[-3000:])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["lost"] is False and result["kills"] == 2 and result["members"] == 3
    assert result["messages_accepted"] == 300 and result["final"] == 300
    assert result["mo_missing"] == 0 and result["unflagged_duplicates"] == 0
    assert result["binds_over_limit"] == 0 and result["bind_peaks"]
