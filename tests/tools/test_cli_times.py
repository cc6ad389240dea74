"""``--since -2h`` / ``--since -7d`` written as the README shows, through the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bridge.cli import _attach_relative_times
from tests.e2e.conftest import _bridge, _e2e_backend, _make_bridge, _receiver  # noqa: F401 (fixtures)
from tests.e2e.harness import Bridge, Receiver, wait_for


def _tool(bridge: Bridge, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge.cli", *args, "--config", str(bridge.config_path)],
                          capture_output=True, text=True, timeout=120, cwd=bridge.tmp)


class TestRelativeSince:
    def test_replay_and_export_take_negative_durations(self, bridge: Bridge, receiver: Receiver) -> None:
        """replay reports and export accept -2h and -7d as separate arguments, and select by them."""
        mid = bridge.send(["+8613812351001"])["result"][0]["smsMsgId"]
        wait_for(lambda: receiver.reports_for(mid), what="the report")

        for since in ("-2h", "-7d"):
            done = _tool(bridge, "replay", "reports", "--since", since, "--status", "DELIVRD", "--dry-run", "--json")
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout)["queued"] == 1
            exported = _tool(bridge, "export", "--since", since, "--format", "jsonl")
            assert exported.returncode == 0, exported.stderr
            assert [json.loads(line)["message_id"] for line in exported.stdout.splitlines()] == [mid]

        later = _tool(bridge, "export", "--since", "-2h", "--until", "-1h", "--format", "jsonl")
        assert later.returncode == 0 and later.stdout == ""
        receipts = _tool(bridge, "replay", "receipts", "--since", "-30m", "--dry-run", "--json")
        assert receipts.returncode == 0, receipts.stderr

    def test_a_bad_relative_time_is_still_one_line(self, bridge: Bridge) -> None:
        done = _tool(bridge, "export", "--since", "-2x")
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1


class TestAttach:
    @pytest.mark.parametrize(("argv", "expected"), [
        (["export", "--since", "-2h"], ["export", "--since=-2h"]),
        (["replay", "reports", "--until", "-1.5d", "--json"], ["replay", "reports", "--until=-1.5d", "--json"]),
        (["export", "--since", "--json"], ["export", "--since", "--json"]),   # left for argparse to refuse
        (["export", "--output", "-2h"], ["export", "--output", "-2h"]),       # only time options
    ])
    def test_only_relative_times_after_time_options_are_attached(self, argv: list[str], expected: list[str]) -> None:
        assert _attach_relative_times(argv) == expected
