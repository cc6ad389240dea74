"""Run ``smsc-sim run`` as a child process and talk to it (treq local_httpbin pattern).

The child listens on port 0 everywhere and prints one JSON ready line; the parent
reads it with a deadline, never with a sleep.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tools.lab import LabError, read_ready_line

__all__ = ["REPO", "SimProcess", "wait_for"]

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30.0


def wait_for(condition, timeout: float = 10.0, what: str = "condition"):
    """Poll ``condition`` until it returns something truthy, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


class SimProcess:
    """A simulator child process with its ports and a small control API client."""

    def __init__(self, config_path: Path, log_path: Path) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self._log = open(log_path, "wb")  # noqa: SIM115 (closed in stop())
        self.log_path = log_path
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "carriers.sim.cli", "run", "--config", str(config_path),
             "--log-format", "json"],
            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._log,
        )
        self.ready = self._read_ready()
        self.ports: dict[str, int] = self.ready["ports"]
        self.control: int = self.ready["control"]

    def _read_ready(self) -> dict[str, Any]:
        try:
            return read_ready_line(self.proc, START_TIMEOUT_S, self.stderr, "simulator")
        except LabError as exc:
            self.stop()
            raise AssertionError(str(exc)) from None

    def stderr(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-4000:]

    def api(self, method: str, path: str, body: object = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"http://127.0.0.1:{self.control}{path}", data=data,
                                         method=method)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def stats(self, carrier: str) -> dict[str, Any]:
        return self.api("GET", "/stats")[1]["carriers"][carrier]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        """Signal the child and wait for it; kill it if it does not stop in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()
        return self.proc.returncode
