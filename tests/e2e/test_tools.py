"""Operator tools against a real daemon, simulator and receiver: replay and export."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections import Counter

import pytest

from tests.conftest import Backend
from tests.e2e.harness import Bridge, Receiver, wait_for


def _tool(bridge: Bridge, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge.cli", *args, "--config", str(bridge.config_path)],
                          capture_output=True, text=True, timeout=120, cwd=bridge.tmp)


def _report_count(receiver: Receiver, message_id: str) -> int:
    return len(receiver.reports_for(message_id))


def _sent(bridge: Bridge, receiver: Receiver, numbers: list[str]) -> list[str]:
    ids = [r["smsMsgId"] for r in bridge.send(numbers)["result"]]
    wait_for(lambda: all(receiver.reports_for(m) for m in ids), what="reports")
    return ids



@pytest.fixture(name="e2e_backend")
def _both_backends(store_backend: Backend) -> Backend:
    """Every test here runs on SQLite and on a real PostgreSQL."""
    return store_backend

class TestReplayReports:
    def test_replay_while_daemon_runs_then_stopped(self, bridge: Bridge, receiver: Receiver) -> None:
        """Selected reports are pushed again exactly once per run, by the daemon or by the tool itself."""
        ids = _sent(bridge, receiver, ["+8613812350001", "+8613812350002", "+8613812350003"])
        done = _tool(bridge, "replay", "reports", "--id", ids[0], "--id", ids[1], "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["queued"] == 2
        wait_for(lambda: _report_count(receiver, ids[0]) == 2 and _report_count(receiver, ids[1]) == 2,
                 what="replayed reports")
        assert _report_count(receiver, ids[2]) == 1

        assert bridge.stop() == 0
        again = _tool(bridge, "replay", "reports", "--id", ids[2], "--json")
        assert again.returncode == 0, again.stderr
        summary = json.loads(again.stdout)
        assert summary["queued"] == 1 and summary["pushed"] == 1
        assert _report_count(receiver, ids[2]) == 2
        assert Counter(b["smsMsgId"] for b in receiver.acked("/reports"))[ids[0]] == 2

    def test_dry_run_lists_and_pushes_nothing(self, bridge: Bridge, receiver: Receiver) -> None:
        """--dry-run names what would be pushed and queues nothing."""
        ids = _sent(bridge, receiver, ["+8613812350011"])
        done = _tool(bridge, "replay", "reports", "--status", "DELIVRD", "--dry-run", "--json")
        out = json.loads(done.stdout)
        assert out["dry_run"] is True and out["queued"] == 1 and ids[0] in out["items"][0]
        assert _report_count(receiver, ids[0]) == 1

    def test_bad_argument_is_one_line(self, bridge: Bridge) -> None:
        """A bad time gives one line on stderr and exit status 2."""
        done = _tool(bridge, "replay", "reports", "--since", "yesterday-ish")
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1


class TestReplayReceipts:
    def test_receipts_from_file_finalise_once(self, bridge: Bridge, receiver: Receiver) -> None:
        """A receipt fed from a file finalises its message with one report; a second run changes nothing."""
        mid = bridge.send(["+8613812351111"])["result"][0]["smsMsgId"]   # the simulator never receipts *1111
        seg = wait_for(lambda: bridge.message(mid)["segments"][0].get("carrierMessageId"), what="submit_sm_resp")
        receipt_id = f"{int(seg):X}"   # China Mobile writes receipt ids in upper-case hex
        line = {"carrier": "cmcc", "receipt": {
            "v": 1, "message_id": receipt_id, "stat": "DELIVRD", "err": "000", "message_state": None,
            "submit_date": "2611250400", "done_date": "2611250401", "text": "", "source": "text"}}
        path = bridge.tmp / "receipts.jsonl"
        path.write_text(json.dumps(line) + "\n", encoding="utf-8")
        first = _tool(bridge, "replay", "receipts", "--file", str(path), "--json")
        assert first.returncode == 0, first.stderr
        assert json.loads(first.stdout)["matched"] == 1 and json.loads(first.stdout)["queued"] == 1
        report = wait_for(lambda: receiver.reports_for(mid), what="report")[0]
        assert report["status"] == "DELIVRD"
        second = _tool(bridge, "replay", "receipts", "--file", str(path), "--json")
        assert json.loads(second.stdout)["queued"] == 0
        log = _tool(bridge, "replay", "receipts", "--all", "--json")
        assert json.loads(log.stdout)["queued"] == 0
        wait_for(lambda: bridge.message(mid)["reported"], what="report acked")
        assert _report_count(receiver, mid) == 1

    def test_unreadable_file_is_one_line(self, bridge: Bridge) -> None:
        """A missing receipts file gives one line and exit status 2."""
        done = _tool(bridge, "replay", "receipts", "--file", "/nonexistent.jsonl")
        assert done.returncode == 2 and "no such file" in done.stderr and len(done.stderr.strip().splitlines()) == 1


class TestExport:
    def test_csv_and_jsonl_match_the_store(self, bridge: Bridge, receiver: Receiver) -> None:
        """Exports list every message with its final status, redacted unless --no-redact."""
        ids = _sent(bridge, receiver, ["+8613812352001", "+8613812352002"])
        wait_for(lambda: all(bridge.message(m)["reported"] for m in ids), what="reports acked")
        plain = _tool(bridge, "export", "--format", "csv")
        rows = {r["message_id"]: r for r in csv.DictReader(io.StringIO(plain.stdout))}
        assert set(ids) <= set(rows)
        assert rows[ids[0]]["recipient"] == "+86*******2001" and rows[ids[0]]["status"] == "DELIVRD"
        assert rows[ids[0]]["carrier"] == "cmcc" and rows[ids[0]]["report_state"] == "acked"
        full = _tool(bridge, "export", "--format", "jsonl", "--no-redact")
        records = {r["message_id"]: r for r in map(json.loads, full.stdout.splitlines())}
        assert records[ids[1]]["recipient"] == "+8613812352002" and records[ids[1]]["segments"] == 1
