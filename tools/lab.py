"""A lab bench for operator tools: the simulator and the daemon as child processes, a
recording HTTP receiver, and the configs that tie them together. Loopback only, ports
picked by the OS.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = [
    "APP_TOKEN", "CARRIERS", "CHANNEL", "OPERATOR_TOKEN", "Child", "LabConfig", "LabError", "Receiver",
    "child_env", "die_with_parent", "http_json", "read_ready_line", "start_bridge", "start_sim", "wait_until",
    "write_bridge_config", "write_sim_config",
]

REPO = Path(__file__).resolve().parent.parent
APP_TOKEN = "lab-app-token"
OPERATOR_TOKEN = "lab-operator-token"
CHANNEL = "10690001"
CARRIERS = ("cmcc", "cucc", "ctcc", "cbn", "intl")


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05,
               error: type[Exception] = TimeoutError) -> Any:
    """Poll ``predicate`` until it is truthy; ``error`` names what did not happen in time."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise error(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def http_json(method: str, url: str, body: Any = None, token: str | None = None,
              timeout: float = 15.0) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode("utf-8", "replace")


class _QuietServer(ThreadingHTTPServer):
    """A client (the daemon) killed mid-request is part of the plan, not an error to print."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class Receiver:
    """Records every POST body by path; answers 503 while ``down``."""

    def __init__(self) -> None:
        self.down = False
        self.bodies: dict[str, list[dict[str, Any]]] = {}
        self.webhook_ids: dict[str, list[str | None]] = {}   # parallel to bodies
        self.refused = 0
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (stdlib API)
                raw = self.rfile.read(int(self.headers.get("content-length", "0")))
                status = 503 if outer.down else 200
                with outer._lock:
                    if status == 200:
                        outer.bodies.setdefault(self.path, []).append(json.loads(raw))
                        outer.webhook_ids.setdefault(self.path, []).append(self.headers.get("webhook-id"))
                    else:
                        outer.refused += 1
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def acked(self, path: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.bodies.get(path, ()))

    def acked_ids(self, path: str) -> list[str | None]:
        """The ``webhook-id`` header of each acknowledged POST, in the order of :meth:`acked`."""
        with self._lock:
            return list(self.webhook_ids.get(path, ()))

    def counts(self, path: str, key: str) -> Counter[str]:
        return Counter(str(b.get(key)) for b in self.acked(path))

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class LabError(RuntimeError):
    """A lab step that failed: one line (plus a log tail) for the operator."""


def die_with_parent() -> None:
    """Children get SIGKILL if the tool itself is killed (Linux only)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def child_env() -> dict[str, str]:
    """The checkout importable in the children even without an editable install."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}


def read_ready_line(proc: subprocess.Popen[bytes], timeout: float, log_tail: Callable[[], str],
                    name: str = "child") -> dict[str, Any]:
    """The JSON line a child prints on stdout once it listens (daemon, simulator)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    buf = b""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or proc.poll() is not None:
                raise LabError(f"{name} did not get ready; log tail:\n{log_tail()}")
            if sel.select(min(left, 0.5)):
                buf += os.read(proc.stdout.fileno(), 4096)
    return json.loads(buf.split(b"\n", 1)[0])


class Child:
    """A child process that prints one JSON ready line on stdout; logs go to a file."""

    def __init__(self, name: str, argv: list[str], workdir: Path, log_path: Path | None = None) -> None:
        self.name = name
        self.log_path = log_path or workdir / f"{name}.log"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, cwd=workdir,
                                         preexec_fn=die_with_parent, env=child_env())
        self.ready: dict[str, Any] = {}

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = 30.0) -> dict[str, Any]:
        self.ready = read_ready_line(self.proc, timeout, self.log_tail, self.name)
        return self.ready

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill9(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode


def _spawn(module: str, config: Path, name: str, cwd: Path, timeout: float) -> Child:
    child = Child(name, [sys.executable, "-m", module, "run", "--config", str(config)], cwd)
    child.wait_ready(timeout)
    return child


@dataclass
class LabConfig:
    """What differs between lab runs; everything else is the lab's fixed setup."""

    workdir: Path
    receipt_delay_ms: tuple[int, int] = (5, 50)
    sim_tps: int = 100_000
    sim_window: int = 1_000
    window: int = 50
    tps: float | None = None
    binds: int = 1
    commit_interval_ms: int = 2   # the shipped default
    response_timeout_s: float = 5.0
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 2.0
    sim_extra: dict[str, str] = field(default_factory=dict)   # [sim.carriers.<id>] lines
    store_url: str | None = None   # a PostgreSQL database instead of the SQLite file in workdir


def write_sim_config(cfg: LabConfig) -> Path:
    path = cfg.workdir / "sim.toml"
    lo, hi = cfg.receipt_delay_ms
    text = (f"[sim]\ncontrol_port = 0\nreceipt_delay_ms = [{lo}, {hi}]\ntps = {cfg.sim_tps}\n"
            f"window = {cfg.sim_window}\nmax_binds = 16\n")
    for cid in CARRIERS:
        text += f"[sim.carriers.{cid}]\nport = 0\n{cfg.sim_extra.get(cid, '')}\n"
    path.write_text(text, encoding="utf-8")
    return path


def write_bridge_config(cfg: LabConfig, sim_ports: dict[str, int], receiver: Receiver) -> Path:
    path = cfg.workdir / "bridge.toml"
    tps = f"tps = {cfg.tps}\n" if cfg.tps else ""
    carriers = "".join(
        f"[carriers.{cid}]\nhost = \"127.0.0.1\"\nport = {sim_ports[cid]}\n"
        f"binds = [{{ type = \"transceiver\", count = {cfg.binds} }}]\nwindow = {cfg.window}\n{tps}"
        f"response_timeout_s = {cfg.response_timeout_s}\nenquire_link_s = 10.0\n\n" for cid in CARRIERS)
    path.write_text(f"""
[api]
host = "127.0.0.1"
port = 0
operator_token = "{OPERATOR_TOKEN}"

[store]
path = "{cfg.workdir / 'bridge.db'}"
{f'url = "{cfg.store_url}"' if cfg.store_url else ""}
commit_interval_ms = {cfg.commit_interval_ms}

[logging]
level = "warning"
format = "json"

[simulator]
embedded = false

[rules]
quiet_hours = ["00:00", "00:00"]

[callbacks]
timeout_s = 5.0
backoff_initial_s = {cfg.backoff_initial_s}
backoff_max_s = {cfg.backoff_max_s}
concurrency = 32
allow_private = ["127.0.0.1:{receiver.port}"]      # the lab receiver (SSRF guard)

{carriers}
[[apps]]
id = "lab"
token = "{APP_TOKEN}"
uplink_url = "{receiver.url('/uplink')}"

[[channels]]
number = "{CHANNEL}"
signature = "HUAWEI"
app = "lab"

[[templates]]
id = "otp"
text = "Your code is ${{NUM_6}}."
class = "otp"
""", encoding="utf-8")
    return path


def start_sim(cfg: LabConfig, timeout: float = 30.0) -> Child:
    return _spawn("carriers.sim.cli", write_sim_config(cfg), "sim", cfg.workdir, timeout)


def start_bridge(cfg: LabConfig, config_path: Path, timeout: float = 30.0, wait_bound: bool = True) -> Child:
    child = _spawn("bridge.cli", config_path, "bridge", cfg.workdir, timeout)
    if not wait_bound:
        return child
    api = f"http://127.0.0.1:{child.ready['api']}"

    def bound() -> bool:
        status, health = http_json("GET", f"{api}/healthz")
        return status == 200 and health["bound"] == health["binds"] > 0

    wait_until(bound, timeout, "every bind bound")
    return child
