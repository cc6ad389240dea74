"""End-to-end harness: the real daemon as a subprocess, its embedded simulator, and a
real HTTP receiver for status reports and uplinks. Everything binds 127.0.0.1 on ports
the OS picks, so runs can overlap. Waiting is on conditions with deadlines.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tools.lab import read_ready_line, wait_until

APP_TOKEN = "test-app-token"
OPERATOR_TOKEN = "test-operator-token"
CHANNEL = "10690001"
CHANNEL2 = "10690002"


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.02,
             what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy, or fail the test after ``timeout``."""
    return wait_until(predicate, timeout, what, interval, error=AssertionError)


@dataclass
class Push:
    path: str
    body: dict[str, Any]
    answered: int
    raw: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class Receiver:
    """Records every POST; ``status`` decides the answer (e.g. 500 while 'down')."""

    def __init__(self) -> None:
        self.pushes: list[Push] = []
        self.status = 200
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (stdlib API)
                length = int(self.headers.get("content-length", "0"))
                raw = self.rfile.read(length)
                status = receiver.status
                with receiver._lock:
                    receiver.pushes.append(Push(self.path, json.loads(raw), status, raw,
                                                {k.lower(): v for k, v in self.headers.items()}))
                self.send_response(status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def acked(self, path: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [p.body for p in self.pushes if p.answered == 200 and (path is None or p.path == path)]

    def reports_for(self, message_id: str) -> list[dict[str, Any]]:
        return [b for b in self.acked("/reports") if b.get("smsMsgId") == message_id]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class BridgeOptions:
    receipt_timeout_s: float = 259200.0
    response_timeout_s: float = 5.0
    commit_interval_ms: int = 2   # the shipped default
    exempt: list[str] = field(default_factory=list)
    quiet_hours: tuple[str, str] = ("00:00", "00:00")   # no quiet hours unless a test asks
    sim_extra: str = ""
    carriers_extra: str = ""
    window: int = 10
    backoff_initial_s: float = 0.05
    backoff_max_s: float = 0.5
    mo_ttl_s: float = 600.0
    callback_max_age_s: float = 86400.0
    external_sim: bool = False   # run smsc-sim as its own process (survives a daemon kill -9)
    sim_carrier_extra: dict[str, str] = field(default_factory=dict)   # lines for [sim.carriers.<id>]
    carrier_extra: dict[str, str] = field(default_factory=dict)       # lines for [carriers.<id>]
    store_url: str | None = None   # PostgreSQL instead of the embedded SQLite file
    node: str | None = "e2e"       # [cluster] node: stable, so a restarted daemon takes its own work back at once
    failover_s: float = 10.0       # [cluster] failover_s
    binds: dict[str, int] = field(default_factory=dict)                # bind count per carrier (default 1)
    run_args: tuple[str, ...] = ()                                     # e.g. ("--workers", "2")
    app_extra: str = ""                                                # lines for the [[apps]] table


def write_sim_config(tmp: Path, opts: BridgeOptions, fixed_ports: bool = False) -> Path:
    sim = tmp / "sim.toml"
    ports = "".join(f"[sim.carriers.{cid}]\nport = 0\n{opts.sim_carrier_extra.get(cid, '')}\n"
                    for cid in CARRIERS) if fixed_ports else ""
    control = "control_port = 0\n" if fixed_ports else ""
    sim.write_text(f"[sim]\nreceipt_delay_ms = [1, 20]\n{control}{opts.sim_extra}\n{ports}", encoding="utf-8")
    return sim


CARRIERS = ("cmcc", "cucc", "ctcc", "cbn", "intl")


def write_config(tmp: Path, receiver: Receiver, opts: BridgeOptions, sim_ports: dict[str, int] | None) -> Path:
    sim = write_sim_config(tmp, opts)
    carriers = ""
    for cid in CARRIERS:
        target = f"host = \"127.0.0.1\"\nport = {sim_ports[cid]}\n" if sim_ports else ""
        count = opts.binds.get(cid, 1)
        carriers += (f"[carriers.{cid}]\n{target}binds = [{{ type = \"transceiver\", count = {count} }}]\n"
                     f"window = {opts.window}\nresponse_timeout_s = {opts.response_timeout_s}\n"
                     f"enquire_link_s = 5.0\n{opts.carrier_extra.get(cid, '')}\n")
    cfg = tmp / "bridge.toml"
    cfg.write_text(f"""
[api]
host = "127.0.0.1"
port = 0
operator_token = "{OPERATOR_TOKEN}"

[store]
path = "{tmp / 'bridge.db'}"
commit_interval_ms = {opts.commit_interval_ms}
{f'url = "{opts.store_url}"' if opts.store_url else ""}

[cluster]
{f'node = "{opts.node}"' if opts.node else ""}
failover_s = {opts.failover_s}

[logging]
level = "info"
format = "json"

[simulator]
embedded = {"false" if sim_ports else "true"}
use_profile_ports = false
control_port = 0
config = "{sim}"

[rules]
receipt_timeout_s = {opts.receipt_timeout_s}
quiet_hours = ["{opts.quiet_hours[0]}", "{opts.quiet_hours[1]}"]
exempt_numbers = {json.dumps(opts.exempt)}
mo_reassembly_ttl_s = {opts.mo_ttl_s}

[callbacks]
timeout_s = 2.0
backoff_initial_s = {opts.backoff_initial_s}
backoff_max_s = {opts.backoff_max_s}
max_age_s = {opts.callback_max_age_s}
allow_private = ["127.0.0.1:{receiver.port}"]      # the test receiver (SSRF guard)

{carriers}
{opts.carriers_extra}

[[apps]]
id = "test"
token = "{APP_TOKEN}"
uplink_url = "{receiver.url('/uplink')}"
{opts.app_extra}

[[channels]]
number = "{CHANNEL}"
signature = "HUAWEI"
app = "test"

[[channels]]
number = "{CHANNEL2}"
signature = "Shop"
app = "test"

[[templates]]
id = "otp"
text = "Your code is ${{NUM_6}}."
class = "otp"

[[templates]]
id = "note"
text = "Hello ${{TXT_20}}, your parcel has shipped."
class = "notification"
""", encoding="utf-8")
    return cfg


class Bridge:
    """A running ``smpp-bridge run`` subprocess and clients for its APIs."""

    def __init__(self, tmp: Path, receiver: Receiver, opts: BridgeOptions | None = None,
                 sim_ready: dict[str, Any] | None = None) -> None:
        """``sim_ready``: the ready line of a simulator already running (shared by a cluster)."""
        self.tmp = tmp
        self.receiver = receiver
        self.opts = opts or BridgeOptions()
        self.sim_proc: subprocess.Popen[bytes] | None = None
        self.sim_ready: dict[str, Any] = dict(sim_ready or {})
        if self.opts.external_sim and not self.sim_ready:
            self._start_sim()
        self.config_path = write_config(tmp, receiver, self.opts, self.sim_ready.get("ports"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready: dict[str, Any] = {}
        self.starts = 0

    # -- process ---------------------------------------------------------------------

    def start(self, timeout: float = 30.0, wait_bound: bool = True) -> Bridge:
        self.starts += 1
        log = open(self.tmp / f"bridge-{self.starts}.log", "wb")  # noqa: SIM115 (kept open for the child)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bridge.cli", "run", "--config", str(self.config_path), *self.opts.run_args],
            stdout=subprocess.PIPE, stderr=log, env=env, cwd=self.tmp,
        )
        self.ready = self._read_ready(timeout)
        if wait_bound:
            wait_for(self._all_bound, timeout, what="every bind bound")
        return self

    def _all_bound(self) -> bool:
        status, health = self.request("GET", f"{self.api}/healthz", token=None)
        return status == 200 and health["binds"] > 0 and health["bound"] == health["binds"]

    def _start_sim(self) -> None:
        sim_cfg = write_sim_config(self.tmp, self.opts, fixed_ports=True)
        log = open(self.tmp / "sim.log", "wb")  # noqa: SIM115 (kept open for the child)
        self.sim_proc = subprocess.Popen(
            [sys.executable, "-m", "carriers.sim.cli", "run", "--config", str(sim_cfg)],
            stdout=subprocess.PIPE, stderr=log, cwd=self.tmp,
        )
        self.sim_ready = read_ready_line(self.sim_proc, 30.0, lambda: (self.tmp / "sim.log").read_text())

    def _read_ready(self, timeout: float) -> dict[str, Any]:
        assert self.proc is not None
        return read_ready_line(self.proc, timeout, self.log_text)

    def log_text(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.tmp.glob("bridge-*.log")))

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def close(self) -> None:
        for proc in (self.proc, self.sim_proc):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)

    # -- HTTP ------------------------------------------------------------------------

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.ready['api']}"

    @property
    def control(self) -> str:
        port = self.sim_ready["control"] if self.sim_ready else self.ready["control"]
        return f"http://127.0.0.1:{port}"

    def request(self, method: str, url: str, body: Any = None, token: str | None = APP_TOKEN,
                raw: bytes | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(url, data=data, method=method)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=15) as resp:
                return resp.status, _decode(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _decode(exc.read())

    def send(self, to: list[str] | str, *, template: str | None = "otp", params: list[str] | None = None,
             body: str | None = None, sender: str = CHANNEL, callback: bool = True, **extra: Any) -> dict[str, Any]:
        payload: dict[str, Any] = {"from": sender, "to": to, **extra}
        if body is not None:
            payload["body"] = body
        else:
            payload["templateId"] = template
            payload["templateParas"] = params if params is not None else ["123456"]
        if callback:
            payload["statusCallback"] = self.receiver.url("/reports")
        status, answer = self.request("POST", f"{self.api}/v1/sms", payload)
        assert status == 200, (status, answer)
        return answer

    def message(self, message_id: str) -> dict[str, Any]:
        status, answer = self.request("GET", f"{self.api}/v1/sms/{message_id}")
        assert status == 200, (status, answer)
        return answer

    def submits(self, carrier: str | None = None) -> list[dict[str, Any]]:
        url = f"{self.control}/submits?limit=1000000" + (f"&carrier={carrier}" if carrier else "")
        status, answer = self.request("GET", url, token=None)
        assert status == 200, answer
        return answer["submits"] if isinstance(answer, dict) else answer

    def db_count(self, sql: str) -> int:
        """One COUNT(*) read straight from the daemon's store, whichever backend it is."""
        if self.opts.store_url:
            import psycopg

            with psycopg.connect(self.opts.store_url) as conn:
                return int(conn.execute(sql).fetchone()[0])  # type: ignore[index]
        import sqlite3

        con = sqlite3.connect(f"file:{self.tmp / 'bridge.db'}?mode=ro", uri=True)
        try:
            return int(con.execute(sql).fetchone()[0])
        finally:
            con.close()

    def sim(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return self.request(method, f"{self.control}{path}", body, token=None)


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")
