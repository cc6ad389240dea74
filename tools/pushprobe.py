"""Push delivery under receiver and store faults, measured on real sockets (issue 14: 1, 2, 6).

Runs the daemon's :class:`~bridge.outbox.Pusher` on the real reactor with a real SQLite
store and twisted.web receivers on 127.0.0.1 (OS-picked ports), and prints the figures:

    python tools/pushprobe.py hang       # 60 reports to a receiver that never answers + a healthy one
    python tools/pushprobe.py outage     # receiver down 60 s while 562 reports queue, then up
    python tools/pushprobe.py diskfull   # store on a full tmpfs for 30 s (needs root for mount)
    python tools/pushprobe.py ssrf       # a host name resolving to loopback is refused at push time
    python tools/pushprobe.py outage --small --json

``--small`` scales every scenario down for the test suite. Exit status 0 unless the
scenario could not run (e.g. ``diskfull`` without permission to mount: status 3).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import deferLater, react
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from bridge.config import CallbackConfig
from bridge.outbox import Pusher
from bridge.store import Store, result_of
from bridge.store.sqlite import open_sqlite

CANNOT_RUN = 3


@dataclass
class Figures:
    scenario: str
    params: dict[str, Any] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)


class Sink(Resource):
    """A receiver: records each POST's smsMsgId, webhook-id and arrival time; can hang."""

    isLeaf = True

    def __init__(self, reactor: Any, *, hang: bool = False) -> None:
        super().__init__()
        self.reactor = reactor
        self.hang = hang
        self.arrivals: list[tuple[str, float]] = []
        self.webhook_ids: list[str] = []
        self.held: list[Request] = []

    def render_POST(self, request: Request) -> bytes | int:  # noqa: N802 (twisted.web API)
        assert request.content is not None
        ref = json.loads(request.content.read())["smsMsgId"]
        self.arrivals.append((ref, self.reactor.seconds()))
        self.webhook_ids.append(request.getHeader("webhook-id") or "")
        if self.hang:
            self.held.append(request)
            return NOT_DONE_YET
        return b"ok"

    def counts(self) -> Counter[str]:
        return Counter(ref for ref, _ in self.arrivals)


def _payload(ref: str) -> str:
    return json.dumps({"smsMsgId": ref, "from": "10690001", "to": "+8613812345678",
                       "status": "DELIVRD", "orgCode": "DELIVRD"}, separators=(",", ":"))


async def _sleep(reactor: Any, seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


async def _wait_for(reactor: Any, condition: Any, deadline_s: float, what: str) -> None:
    end = reactor.seconds() + deadline_s
    while not condition():
        if reactor.seconds() > end:
            raise TimeoutError(f"gave up waiting for {what}")
        await _sleep(reactor, 0.01)


def _listen(reactor: Any, sink: Sink, port: int = 0) -> Any:
    return reactor.listenTCP(port, Site(sink), interface="127.0.0.1")


def _cfg(ports: list[int], **overrides: Any) -> CallbackConfig:
    """The default [callbacks] of config/default.toml, with the probe's receivers allowed."""
    values: dict[str, Any] = dict(timeout_s=10.0, max_age_s=86_400.0, backoff_initial_s=1.0,
                                  backoff_max_s=300.0, concurrency=64)
    values.update(overrides)
    return CallbackConfig(allow_private=frozenset(f"127.0.0.1:{p}" for p in ports), **values)


async def _queue(reactor: Any, store: Store, pusher: Pusher, url: str, refs: list[str]) -> dict[str, float]:
    now = reactor.seconds()
    for ref in refs:
        store.outbox.queue("report", ref, url, _payload(ref), now)
    await store.durable()
    pusher.wake()
    return dict.fromkeys(refs, now)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


# -- scenarios ---------------------------------------------------------------------------


async def hang(reactor: Any, workdir: Path, small: bool) -> Figures:
    """Defect 2: a receiver that never answers next to a healthy one."""
    n_hang, n_ok, seconds = (12, 40, 4.0) if small else (60, 200, 20.0)
    slow, fast = Sink(reactor, hang=True), Sink(reactor)
    slow_port, fast_port = _listen(reactor, slow), _listen(reactor, fast)
    ports = [slow_port.getHost().port, fast_port.getHost().port]
    store = open_sqlite(workdir / "hang.db", clock=reactor, commit_interval_s=0.005)[0]
    pusher = Pusher(store, _cfg(ports, timeout_s=30.0 if small else 10.0), reactor=reactor)
    pusher.start()
    slow_url, fast_url = (f"http://127.0.0.1:{p}/cb" for p in ports)
    await _queue(reactor, store, pusher, slow_url, [f"h{i}" for i in range(n_hang)])
    sent: dict[str, float] = {}
    for i in range(n_ok):
        sent.update(await _queue(reactor, store, pusher, fast_url, [f"ok{i}"]))
        await _sleep(reactor, seconds / n_ok)
    await _wait_for(reactor, lambda: len(fast.counts()) >= n_ok, 60.0, "the healthy receiver's reports")
    latencies = [at - sent[ref] for ref, at in fast.arrivals]
    stats = pusher.stats
    await pusher.stop(0.5)
    await store.close()
    for request in slow.held:
        request.transport.abortConnection()
    await slow_port.stopListening()
    await fast_port.stopListening()
    return Figures("hang", {"hanging_reports": n_hang, "healthy_reports": n_ok, "over_s": seconds},
                   {"healthy_p50_s": _pct(latencies, 0.5), "healthy_p99_s": _pct(latencies, 0.99),
                    "healthy_max_s": round(max(latencies), 3),
                    "healthy_received": len(fast.counts()),
                    "hanging_open_requests_at_end": len(slow.held),
                    "failed_while_measuring": stats.failed})


async def outage(reactor: Any, workdir: Path, small: bool) -> Figures:
    """Defect 6: receiver down while reports queue, then up: how long until the backlog drains."""
    n, down_s = (60, 4.0) if small else (562, 60.0)
    sink = Sink(reactor)
    port = _listen(reactor, sink)
    number = port.getHost().port
    await port.stopListening()                          # down: connections refused
    store = open_sqlite(workdir / "outage.db", clock=reactor, commit_interval_s=0.005)[0]
    pusher = Pusher(store, _cfg([number]), reactor=reactor)
    pusher.start()
    url = f"http://127.0.0.1:{number}/cb"
    refs = [f"o{i}" for i in range(n)]
    step = down_s / n
    for ref in refs:
        await _queue(reactor, store, pusher, url, [ref])
        await _sleep(reactor, step)
    attempts_while_down = sum(i.attempts for i in await store.outbox.due(float("inf"), 100_000))
    port = _listen(reactor, sink, number)               # up
    up_at = reactor.seconds()
    await _wait_for(reactor, lambda: len(sink.counts()) >= n, 400.0, "the backlog to drain")
    last = max(at for _, at in sink.arrivals)
    first = min(at for _, at in sink.arrivals)
    counts = sink.counts()
    await pusher.stop(0.5)
    await store.close()
    await port.stopListening()
    return Figures("outage", {"reports": n, "down_s": down_s},
                   {"first_arrival_after_up_s": round(first - up_at, 3),
                    "last_arrival_after_up_s": round(last - up_at, 3),
                    "attempts_while_down": attempts_while_down,
                    "received": len(counts), "duplicates": sum(c - 1 for c in counts.values())})


async def diskfull(reactor: Any, workdir: Path, small: bool) -> Figures:
    """Defect 1: the store cannot commit for a while; count POSTs during and after."""
    n, full_s, after_s = (10, 6.0, 6.0) if small else (38, 30.0, 30.0)
    mnt = workdir / "tiny"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise PermissionError(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        sink = Sink(reactor)
        port = _listen(reactor, sink)
        store = open_sqlite(mnt / "bridge.db", clock=reactor, commit_interval_s=0.005)[0]
        refs = [f"d{i}" for i in range(n)]
        for ref in refs:
            store.outbox.queue("report", ref, f"http://127.0.0.1:{port.getHost().port}/cb", _payload(ref),
                             reactor.seconds())
        await store.durable()
        filler = _fill(mnt)
        pusher = Pusher(store, _cfg([port.getHost().port]), reactor=reactor)
        pusher.start()
        await _sleep(reactor, full_s)
        during = sink.counts()
        unsaved = pusher.stats.unsaved
        filler.unlink()
        await _wait_for(reactor, lambda: _acked(store) >= n,
                        full_s + after_s + 60, "the acks to commit")
        await _sleep(reactor, after_s)
        total = sink.counts()
        await pusher.stop(0.5)
        await store.close()
        await port.stopListening()
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)
    return Figures("diskfull", {"reports": n, "full_s": full_s},
                   {"posts_while_full": sum(during.values()),
                    "max_posts_per_report_while_full": max(during.values(), default=0),
                    "acks_held_in_memory": unsaved,
                    "posts_total": sum(total.values()),
                    "extra_posts_after_space_returned": sum(total.values()) - sum(during.values())
                    - (n - len(during)),
                    "max_posts_per_report": max(total.values(), default=0),
                    "reports_received": len(total)})


async def ssrf(reactor: Any, workdir: Path, small: bool) -> Figures:
    """Defect 3 at push time: a name that resolves to loopback is refused after resolution."""
    name = socket.gethostname()
    from bridge.urlpolicy import address_problem, literal_address

    resolved = {info[4][0] for info in socket.getaddrinfo(name, 80, proto=socket.IPPROTO_TCP)}
    if not any(address_problem(literal_address(a)) for a in resolved if literal_address(a)):
        raise PermissionError(f"{name} resolves to public addresses only: {sorted(resolved)}")
    sink = Sink(reactor)
    port = _listen(reactor, sink, 0)
    number = port.getHost().port
    store = open_sqlite(workdir / "ssrf.db", clock=reactor, commit_interval_s=0.005)[0]
    refused_url = f"http://{name}:{number}/cb"
    pusher = Pusher(store, _cfg([]), reactor=reactor)
    pusher.start()
    await _queue(reactor, store, pusher, refused_url, ["refused"])
    await _wait_for(reactor, lambda: pusher.stats.dead >= 1, 20.0, "the refusal")
    await pusher.stop(0.5)
    allowed = Pusher(store, CallbackConfig(allow_private=frozenset({f"{name.lower()}:{number}"})),
                     reactor=reactor)
    allowed.start()
    await _queue(reactor, store, allowed, refused_url.replace("/cb", "/ok"), ["allowed"])
    await _wait_for(reactor, lambda: allowed.stats.pushed >= 1, 20.0, "the allowed push")
    await allowed.stop(0.5)
    dead = await store.outbox.dead()
    await store.close()
    await port.stopListening()
    return Figures("ssrf", {"host": name, "resolves_to": sorted(resolved)},
                   {"received": sorted(sink.counts()), "dead_error": dead[0].last_error if dead else None})


def _acked(store: Store) -> int:
    """Acked reports, read synchronously (SQLite: calls have finished when they return)."""
    return sum(c.count for c in result_of(store.outbox.counts()) if c.kind == "report" and c.state == "acked")


SCENARIOS = {"hang": hang, "outage": outage, "diskfull": diskfull, "ssrf": ssrf}


def _fill(directory: Path) -> Path:
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        chunk = 1 << 16
        while chunk:
            try:
                os.write(fd, b"\0" * chunk)
            except OSError:
                chunk //= 2
    finally:
        os.close(fd)
    return filler


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pushprobe", description=__doc__.split("\n\n")[0])
    p.add_argument("scenario", choices=sorted(SCENARIOS))
    p.add_argument("--small", action="store_true", help="scaled down, for the test suite")
    p.add_argument("--json", action="store_true", help="print one JSON line")
    args = p.parse_args(argv)
    import structlog

    # The pusher's own log (errors only) goes to stderr, the figures to stdout.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40),
                        logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    outcome: dict[str, Any] = {}

    def run(reactor: Any) -> Deferred[None]:
        async def go() -> None:
            with tempfile.TemporaryDirectory(prefix="pushprobe-") as tmp:
                try:
                    outcome["figures"] = await SCENARIOS[args.scenario](reactor, Path(tmp), args.small)
                except PermissionError as exc:
                    outcome["skip"] = str(exc)
            code = _report(outcome, args.json)
            if code:
                raise SystemExit(code)  # react() exits with it

        return ensureDeferred(go())

    react(run)
    return 0  # (not reached: react() exits the process)


def _report(outcome: dict[str, Any], as_json: bool) -> int:
    if "skip" in outcome:
        print(json.dumps({"skip": outcome["skip"]}) if as_json else f"cannot run: {outcome['skip']}")
        return CANNOT_RUN
    figures: Figures = outcome["figures"]
    if as_json:
        print(json.dumps(asdict(figures)))
    else:
        print(f"{figures.scenario}  {json.dumps(figures.params)}")
        for key, value in figures.values.items():
            print(f"  {key:40} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
