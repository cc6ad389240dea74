"""Issue 13's reference gateway, Kannel, measured on this machine with the bench's own pieces.

Issue 13 states its targets beside Kannel 1.4.5's figures "on these machines" (0.315 ms of
CPU per message, 3,938 msg/s end to end). How fast "these machines" are varies by the hour
here, by a factor of up to 1.6 for the same build of the bridge. This tool runs Kannel
(bearerbox and smsbox, durable file store, one transceiver bind, window 100) against the
same simulator, the same callback receiver and the same kind of load generator as
``tools/bench.py`` (keep-alive http.client threads, one recipient per request, a delivery
report per message pushed to an HTTP URL), so the bridge's figures can be set beside
Kannel's from the same hour:

    python tools/kannel_ref.py --messages 20000          # then: python tools/bench.py ...

Like the bench it first offers paced requests (``--latency-messages`` at ``--rate``) and
measures each one's send time to its submit_sm at the simulator, then the bulk phase. It
prints Kannel's latency p50/p99, CPU per message (bearerbox + smsbox, all threads), its
end-to-end rate (the last report received) and the same ratio the bench prints (gateway CPU
over the simulator's, the receiver's and the load generator's), which moves less with the
machine than either figure alone. Needs Kannel's binaries (Debian: ``apt-get install
kannel``); nothing is asserted.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools.bench import (  # noqa: E402 (path set up above for scripts)
    CHANNEL,
    HOST,
    OTP_TEXT,
    SIGNATURE,
    ApiRequest,
    NumberPool,
    Offerer,
    System,
    percentile,
    proc_usage,
    self_cpu,
    submit_latencies_ms,
    wait_reports,
)
from tools.lab import LabError, die_with_parent, wait_until  # noqa: E402

CARRIER = "cucc"            # hex ids in submit_sm_resp and receipts: Kannel's msg-id-type 0x03
SYSTEM_ID, PASSWORD = "cucc", "cucc-pw"
ADMIN_PASSWORD = "kannel-ref"
SEND_USER, SEND_PASSWORD = "bench", "bench-pw"
DLR_DELIVERED, DLR_FAILED = 1, 2


@dataclass(frozen=True, slots=True)
class KannelResult:
    messages: int
    accepted: int
    reports: int
    end_to_end_msg_s: float
    cpu_ms_per_msg: float            # bearerbox + smsbox
    ratio: float                     # gateway CPU / (simulator + receiver + load generator)
    cpu_s_gateway: float
    cpu_s_sim: float
    cpu_s_receiver: float
    cpu_s_load: float
    peak_rss_mb: float               # bearerbox + smsbox
    latency_messages: int            # paced phase before the bulk one (0: none)
    latency_p50_ms: float            # sendsms request sent -> submit_sm seen by the simulator
    latency_p99_ms: float


@dataclass(frozen=True, slots=True)
class Plan:
    """What one run offers: a paced phase (as the bench's latency phase), then a bulk one."""

    messages: int = 20_000
    concurrency: int = 30
    window: int = 100
    latency_messages: int = 2_000
    rate: float = 500.0
    latency_concurrency: int = 16


def free_port() -> int:
    """A port the OS hands out now (Kannel takes fixed ports, not 0)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def write_kannel_config(workdir: Path, smsc_port: int, ports: dict[str, int], window: int) -> Path:
    """Bearerbox with a durable file store and one transceiver, smsbox with sendsms."""
    path = workdir / "kannel.conf"
    path.write_text(f"""
group = core
admin-port = {ports["admin"]}
admin-interface = {HOST}
admin-password = {ADMIN_PASSWORD}
admin-allow-ip = {HOST}
smsbox-port = {ports["smsbox"]}
smsbox-interface = {HOST}
box-allow-ip = {HOST}
log-file = "{workdir / 'bearerbox.log'}"
log-level = 4
store-type = file
store-location = "{workdir / 'kannel.store'}"
dlr-storage = internal

group = smsc
smsc = smpp
smsc-id = {CARRIER}
host = {HOST}
port = {smsc_port}
transceiver-mode = true
smsc-username = {SYSTEM_ID}
smsc-password = {PASSWORD}
system-type = ""
max-pending-submits = {window}
msg-id-type = 0x03
enquire-link-interval = 30
log-level = 4

group = smsbox
bearerbox-host = {HOST}
bearerbox-port = {ports["smsbox"]}
sendsms-port = {ports["sendsms"]}
sendsms-interface = {HOST}
log-file = "{workdir / 'smsbox.log'}"
log-level = 4
access-log = "/dev/null"

group = sendsms-user
username = {SEND_USER}
password = {SEND_PASSWORD}
max-messages = 1
concatenation = false
""", encoding="utf-8")
    return path


class KannelOfferer(Offerer):
    """The bench's load generator speaking Kannel's sendsms (GET, 202 "Accepted")."""

    def __init__(self, port: int, concurrency: int, deadline_s: float, receiver_port: int) -> None:
        super().__init__(port, concurrency, deadline_s)
        self.receiver_port = receiver_port

    def _send(self, conn: http.client.HTTPConnection, req: ApiRequest, record_times: bool) -> None:
        number = req.numbers[0]
        text = f"[{SIGNATURE}]" + OTP_TEXT.replace("${NUM_6}", number[-6:])
        dlr = f"http://{HOST}:{self.receiver_port}/dlr?id={urllib.parse.quote(number)}&type=%d"
        query = urllib.parse.urlencode({
            "username": SEND_USER, "password": SEND_PASSWORD, "from": CHANNEL, "to": number,
            "text": text, "dlr-mask": str(DLR_DELIVERED | DLR_FAILED), "dlr-url": dlr})
        sent = time.time()
        try:
            conn.request("GET", f"/cgi-bin/sendsms?{query}")
            resp = conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            self._error(f"{type(exc).__name__}: {exc}")
            return
        if resp.status not in (200, 202):
            self._error(f"HTTP {resp.status}: {raw[:200]!r}")
            return
        with self._lock:
            self.result.requests += 1
            self.result.accepted_ids.append(number)
            self.accepted_count += 1
            self.result.last_answer = time.time()
            if record_times:
                self.result.sent_at[number] = sent


def _start(argv: list[str], workdir: Path, name: str) -> subprocess.Popen[bytes]:
    with open(workdir / f"{name}.out", "ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=workdir,
                                preexec_fn=die_with_parent)


def _smsc_online(admin_port: int) -> bool:
    url = f"http://{HOST}:{admin_port}/status.txt?password={ADMIN_PASSWORD}"
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            text = resp.read().decode("utf-8", "replace")
    except OSError:
        return False
    return f"{CARRIER}[{CARRIER}]" in text and "(online" in text


def _sendsms_listening(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=1).close()
    except OSError:
        return False
    return True


def _latency(system: System, port: int, pool: NumberPool, plan: Plan) -> list[float]:
    """Paced requests; each one's sendsms send time to its submit_sm at the simulator, in ms."""
    assert system.receiver is not None
    index0 = system.submits_total()
    load = [ApiRequest(b"", (pool.take(CARRIER),), False) for _ in range(plan.latency_messages)]
    offer = KannelOfferer(port, plan.latency_concurrency, deadline_s=600.0,
                          receiver_port=system.receiver.ready["port"])
    offer.start(load, rate=plan.rate)
    answered = offer.join(plan.latency_messages / plan.rate + 600.0)
    if answered.errors:
        raise SystemExit(f"kannel_ref: {answered.errors} sendsms errors: {answered.error_samples}")
    wait_reports(system, plan.latency_messages, timeout=300.0)
    return submit_latencies_ms(system, index0, answered.sent_at, 3 * plan.latency_messages)


def run(plan: Plan, workdir: Path) -> KannelResult:
    bearerbox, smsbox = shutil.which("bearerbox") or "/usr/sbin/bearerbox", shutil.which("smsbox") or "/usr/sbin/smsbox"
    if not Path(bearerbox).exists():
        raise SystemExit("kannel_ref: Kannel is not installed (Debian: apt-get install kannel)")
    system = System(workdir, argparse.Namespace(), log_size=max(1000, 3 * plan.latency_messages))
    boxes: list[subprocess.Popen[bytes]] = []
    try:
        system.start_sim()
        system.start_receiver()
        assert system.sim is not None and system.receiver is not None
        ports = {"admin": free_port(), "smsbox": free_port(), "sendsms": free_port()}
        conf = write_kannel_config(workdir, system.sim.ready["ports"][CARRIER], ports, plan.window)
        boxes.append(_start([bearerbox, "-v", "4", str(conf)], workdir, "bearerbox"))
        wait_until(lambda: _smsc_online(ports["admin"]), 30, "Kannel's SMPP bind", interval=0.1, error=LabError)
        boxes.append(_start([smsbox, "-v", "4", str(conf)], workdir, "smsbox"))
        wait_until(lambda: _sendsms_listening(ports["sendsms"]), 30, "smsbox's sendsms port", interval=0.1,
                   error=LabError)

        pool = NumberPool()
        lat = _latency(system, ports["sendsms"], pool, plan) if plan.latency_messages else []
        base = system.receiver_summary()["distinct"]
        load = [ApiRequest(b"", (pool.take(CARRIER),), False) for _ in range(plan.messages)]
        offer = KannelOfferer(ports["sendsms"], plan.concurrency, deadline_s=600.0,
                              receiver_port=system.receiver.ready["port"])
        pids = {"gateway": [b.pid for b in boxes], "sim": [system.sim.pid], "receiver": [system.receiver.pid]}

        def cpu() -> dict[str, float]:
            return {k: sum(proc_usage(p).cpu_s for p in v) for k, v in pids.items()} | {"load": self_cpu()}

        before, t0 = cpu(), time.time()
        offer.start(load)
        answered = offer.join(600.0)
        summary = wait_reports(system, base + plan.messages, timeout=300.0)
        after = cpu()
        if answered.errors:
            raise SystemExit(f"kannel_ref: {answered.errors} sendsms errors: {answered.error_samples}")
        spent = {k: after[k] - before[k] for k in after}
        rss = sum(proc_usage(p).hwm_mb for p in pids["gateway"])
        reports = summary["distinct"] - base
        elapsed = (summary["last_ack"] or time.time()) - t0
        return KannelResult(
            messages=plan.messages, accepted=answered.requests, reports=reports,
            end_to_end_msg_s=reports / elapsed if elapsed > 0 else 0.0,
            cpu_ms_per_msg=spent["gateway"] / plan.messages * 1000,
            ratio=spent["gateway"] / (spent["sim"] + spent["receiver"] + spent["load"]),
            cpu_s_gateway=spent["gateway"], cpu_s_sim=spent["sim"], cpu_s_receiver=spent["receiver"],
            cpu_s_load=spent["load"], peak_rss_mb=rss, latency_messages=len(lat),
            latency_p50_ms=percentile(lat, 0.50), latency_p99_ms=percentile(lat, 0.99))
    finally:
        for box in reversed(boxes):
            box.terminate()
            try:
                box.wait(15)
            except subprocess.TimeoutExpired:
                box.kill()
                box.wait(5)
        system.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=30, help="keep-alive connections (default: 30)")
    parser.add_argument("--window", type=int, default=100, help="Kannel's max-pending-submits (default: 100)")
    parser.add_argument("--latency-messages", type=int, default=2_000,
                        help="paced requests before the bulk phase, as the bench's latency phase (default: 2000)")
    parser.add_argument("--rate", type=float, default=500.0, help="requests/s of the paced phase (default: 500)")
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, configs)")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="kannel-ref-"))
    try:
        result = run(Plan(args.messages, args.concurrency, args.window, args.latency_messages, args.rate), workdir)
    except LabError as exc:
        print(f"kannel_ref: {exc}", file=sys.stderr)
        return 2
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"Kannel: {result.reports:,} of {result.messages:,} reports, "
          f"{result.end_to_end_msg_s:,.0f} msg/s end to end, {result.cpu_ms_per_msg:.3f} ms CPU per message "
          f"(bearerbox + smsbox), ratio {result.ratio:.3f} (gateway CPU / sim + receiver + load gen), "
          f"peak RSS {result.peak_rss_mb:.1f} MB")
    if result.latency_messages:
        print(f"Kannel: sendsms -> submit_sm at {args.rate:g}/s, {result.latency_messages:,} requests: "
              f"p50 {result.latency_p50_ms:.1f} ms, p99 {result.latency_p99_ms:.1f} ms")
    if args.json_out:
        args.json_out.write_text(json.dumps(asdict(result), indent=2))
    return 0 if result.reports == result.messages else 1


if __name__ == "__main__":
    sys.exit(main())
