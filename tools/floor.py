"""What the frameworks under the bridge cost per message, with no bridge logic at all.

Issue 13 asks for 0.40 ms of CPU per message end to end. This tool measures the floors
that every message pays before the bridge does anything of its own, on the same machine
and with the same pieces the daemon uses (its epoll reactor, its API channel and request
classes, its push client):

- ``web``: twisted.web answering a keep-alive ``POST`` with a fixed JSON body, driven by
  ``tools/bench.py``'s own load generator (http.client threads, 30 connections). The
  server's CPU per request is the intake's floor.
- ``push``: the bridge's push client posting a report-sized body to the benchmark's
  callback receiver, 30 in flight. This process's CPU per push is the report's floor.

Each prints its figure; nothing is asserted (speed lives in benchmarks, not in tests).

    python tools/floor.py web --requests 20000 [--rate 1200]
    python tools/floor.py push --pushes 20000 [--rate 1200]

At full speed many events share one poll of the reactor; at the bridge's own rate (about a
thousand messages a second here) most come alone, and each costs more: ``--rate`` offers
an open-loop load at that rate.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

HOST = "127.0.0.1"
PUSH_DEADLINE_S = 300.0   # the push run gives up (and says so) after this long
# What the bench sends and what the API answers, in size and shape.
REQUEST_BODY = json.dumps({"from": "10690001", "to": ["+8613800138000"], "templateId": "SMS_OTP",
                           "templateParas": {"code": "123456"}}).encode()
ANSWER_BODY = json.dumps({"code": "000000", "description": "Success", "result": [{
    "originTo": "+8613800138000", "createTime": "2026-12-03T16:00:00Z", "from": "10690001",
    "smsMsgId": "0" * 36, "status": "000000", "countryId": "CN", "total": 1}]}).encode()
REPORT_BODY = json.dumps({"smsMsgId": "0" * 36, "from": "10690001", "to": "+8613800138000",
                          "status": "DELIVRD", "orgCode": "DELIVRD", "orgDesc": "", "total": 1,
                          "sequence": 1, "updateTime": "2026-12-03T16:00:00Z", "extend": ""}).encode()


def process_cpu(pid: int) -> float:
    """User + system seconds of ``pid`` (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serve_web() -> int:
    """The API's own reactor, channel and request classes in front of a fixed answer."""
    from bridge.reactor import install

    install()
    from twisted.internet import reactor
    from twisted.web import resource, server

    from bridge.api import BoundedRequest
    from bridge.apiguard import DeadlineChannel

    class Fixed(resource.Resource):
        isLeaf = True

        def render_POST(self, request: Any) -> bytes:  # noqa: N802 (Twisted API)
            request.content.read()
            request.setHeader(b"content-type", b"application/json; charset=utf-8")
            return ANSWER_BODY

    site = server.Site(Fixed(), timeout=None, parsePOSTFormSubmission=False)   # as bridge.api builds it
    site.protocol = type("Channel", (DeadlineChannel,), {"idle_timeout_s": 60.0})
    site.requestFactory = BoundedRequest
    site.log = lambda request: None
    port = reactor.listenTCP(0, site, interface=HOST)
    print(port.getHost().port, flush=True)
    reactor.run()
    return 0


def floor_web(requests: int, connections: int, rate: float | None) -> dict[str, float]:
    """The bench's own load generator (``tools.bench.Offerer``) against the fixed answer."""
    from tools.bench import ApiRequest, Offerer

    server = subprocess.Popen([sys.executable, __file__, "serve-web"], stdout=subprocess.PIPE)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        offerer = Offerer(port, connections, deadline_s=600.0)
        load = [ApiRequest(REQUEST_BODY, ("+8613800138000",), False)] * requests
        cpu0, t0 = process_cpu(server.pid), time.monotonic()
        offerer.start(load, rate)
        answers = offerer.join(600.0)
        cpu1, t1 = process_cpu(server.pid), time.monotonic()
    finally:
        server.kill()
        server.wait()
    if answers.requests != requests or answers.errors:
        raise SystemExit(f"{requests - answers.requests} requests were not answered 200: {answers.error_samples}")
    return {"requests": requests, "us_cpu_per_request": (cpu1 - cpu0) / requests * 1e6,
            "requests_per_s": requests / (t1 - t0)}


def floor_push(pushes: int, in_flight: int, rate: float | None) -> dict[str, float]:
    receiver = subprocess.Popen([sys.executable, "-c", "import tools.bench as b; b.serve_receiver()"],
                                stdout=subprocess.PIPE, cwd=str(Path(__file__).resolve().parent.parent))
    try:
        assert receiver.stdout is not None
        port = json.loads(receiver.stdout.readline())["port"]
        from bridge.reactor import install

        install()
        from twisted.internet import reactor
        from twisted.internet.endpoints import TCP4ClientEndpoint

        from bridge.pushclient import PushConnectionPool

        class Loopback:
            def endpointForURI(self, key: Any) -> TCP4ClientEndpoint:  # noqa: N802 (the pool's API)
                return TCP4ClientEndpoint(reactor, HOST, key.port)

        pool = PushConnectionPool(reactor, Loopback(), per_host=in_flight, idle_s=60.0)
        url = f"http://{HOST}:{port}/reports"
        headers = {"content-type": ["application/json"], "webhook-id": ["msg_floor"],
                   "webhook-timestamp": ["1796313609"]}
        counts = {"sent": 0, "answered": 0, "failed": 0}
        result: dict[str, float] = {}

        def answered(outcome: Any) -> None:
            counts["answered"] += 1
            counts["failed"] += int(getattr(outcome, "code", 0) != 200)
            if counts["answered"] == pushes:
                result["us_cpu_per_push"] = (process_cpu(os.getpid()) - cpu0) / pushes * 1e6
                result["pushes_per_s"] = pushes / (time.monotonic() - t0)
                reactor.stop()
            elif not rate:
                send()

        def send() -> None:
            if counts["sent"] < pushes:
                counts["sent"] += 1
                pool.request("POST", url, data=REPORT_BODY, headers=headers).addBoth(answered)

        def paced() -> None:
            """Open loop: what is due by now at ``rate``, every 10 ms (the pusher launches a
            group commit's reports together, one commit every 10-15 ms under load)."""
            due = min(pushes, int((time.monotonic() - t0) * rate))
            while counts["sent"] < due:
                send()
            if counts["sent"] < pushes:
                reactor.callLater(0.01, paced)

        cpu0, t0 = process_cpu(os.getpid()), time.monotonic()
        if rate:
            reactor.callWhenRunning(paced)
        else:
            for _ in range(in_flight):
                reactor.callWhenRunning(send)
        reactor.callLater(PUSH_DEADLINE_S, reactor.stop)
        reactor.run()
    finally:
        receiver.kill()
        receiver.wait()
    if counts["answered"] < pushes:
        raise SystemExit(f"only {counts['answered']} of {pushes} pushes answered in {PUSH_DEADLINE_S:.0f} s")
    if counts["failed"]:
        raise SystemExit(f"{counts['failed']} pushes were not answered 200")
    return {"pushes": pushes, **result}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    web = sub.add_parser("web", help="twisted.web answering a POST: CPU per request")
    web.add_argument("--requests", type=int, default=20000)
    web.add_argument("--connections", type=int, default=30)
    web.add_argument("--rate", type=float, help="requests/s offered (default: as fast as answered)")
    push = sub.add_parser("push", help="the push client posting a report: CPU per push")
    push.add_argument("--pushes", type=int, default=20000)
    push.add_argument("--in-flight", type=int, default=30)
    push.add_argument("--rate", type=float, help="pushes/s offered (default: as fast as answered)")
    sub.add_parser("serve-web", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.what == "serve-web":
        return serve_web()
    if args.what == "web":
        figures = floor_web(args.requests, args.connections, args.rate)
        print(f"twisted.web floor: {figures['us_cpu_per_request']:.1f} µs CPU per request "
              f"({figures['requests_per_s']:,.0f} requests/s, {args.connections} connections)")
    else:
        figures = floor_push(args.pushes, args.in_flight, args.rate)
        print(f"push floor: {figures['us_cpu_per_push']:.1f} µs CPU per push "
              f"({figures['pushes_per_s']:,.0f} pushes/s, {args.in_flight} in flight)")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
