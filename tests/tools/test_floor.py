"""tools/floor.py runs its two measurements end to end: real server, receiver and client."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

TOOL = Path(__file__).resolve().parents[2] / "tools" / "floor.py"


def _run(*args: str) -> dict[str, float]:
    done = subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, timeout=120,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_web_floor_answers_every_request_and_prints_its_cpu() -> None:
    figures = _run("web", "--requests", "1000", "--connections", "4")
    assert figures["requests"] == 1000
    assert figures["us_cpu_per_request"] > 0   # (the tool exits non-zero unless every request got the answer)


def test_push_floor_gets_every_push_answered() -> None:
    figures = _run("push", "--pushes", "2000", "--in-flight", "4")
    assert figures["pushes"] == 2000
    assert figures["us_cpu_per_push"] > 0 and figures["pushes_per_s"] > 0
