"""Chaos run: traffic through the real daemon and simulator while both misbehave.

During the run the simulator drops connections, answers slowly, refuses binds and stops
answering for a while; one carrier throttles all along; the daemon is ``kill -9``ed at
random moments and restarted; the callback receiver is down for a stretch. Afterwards
it checks, as an outside observer would, that nothing was lost: the callback receiver
got a report for every accepted message (duplicates are told apart by ``webhook-id``,
and one message never gets two different reports), every injected MO reached the uplink
receiver, and, counted per segment from the simulator's submit log, the only duplicate
submits are segments the bridge flagged as possibly sent twice.

    python tools/chaos.py                 # 3,000 messages, 3 kills
    python tools/chaos.py --messages 300 --kills 2 --json-out chaos.json
    python tools/chaos.py --cluster 3 --store-url postgresql://...   # three members, one killed at a time

In cluster mode the load is spread over the live members, a killed member stays dead
past the failover time (the survivors take over its binds, in-flight submits and
pushes) before it restarts, and the simulator's bind counts are watched: the cluster
must never hold more binds to a carrier than configured.

Exit status 0 when nothing was lost, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools.lab import (  # noqa: E402 (path set up above when run as a script)
    APP_TOKEN,
    CHANNEL,
    Child,
    LabConfig,
    Receiver,
    http_json,
    start_bridge,
    start_sim,
    wait_until,
    write_bridge_config,
)

PREFIXES = ("138", "130", "133", "192")   # cmcc, cucc, ctcc, cbn
FAILING_SUFFIXES = {"0000", "1111", "2222", "3333"}


@dataclass
class ChaosResult:
    messages_accepted: int = 0
    requests_retried: int = 0
    mo_injected: int = 0
    kills: int = 0
    faults: list[str] = field(default_factory=list)
    final: int = 0                   # accepted messages whose report reached the receiver
    missing_reports: int = 0
    reports_for_unanswered: int = 0  # reports of messages whose HTTP answer a kill swallowed
    conflicting_reports: int = 0     # messages reported twice under different webhook-ids/statuses
    duplicate_pushes_seen: int = 0   # the same webhook-id received again (at least once)
    pushes_without_webhook_id: int = 0
    mo_missing: int = 0
    duplicate_submits: int = 0       # per segment, from the simulator's submit log
    unflagged_duplicates: int = 0
    members: int = 1
    bind_peaks: dict[str, int] = field(default_factory=dict)   # most binds up at once, per carrier
    binds_over_limit: int = 0        # carriers that ever had more binds than configured
    seconds: float = 0.0

    @property
    def lost(self) -> bool:
        return bool(self.missing_reports or self.conflicting_reports or self.mo_missing
                    or self.unflagged_duplicates or self.pushes_without_webhook_id or self.binds_over_limit)


class _Numbers:
    """Unique recipients whose last four digits trigger no simulator failure rule."""

    def __init__(self) -> None:
        self._i = 0

    def next(self) -> str:
        while True:
            self._i += 1
            tail = f"{self._i:08d}"
            if tail[-4:] not in FAILING_SUFFIXES:
                return f"+86{PREFIXES[self._i % len(PREFIXES)]}{tail}"


class Chaos:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.cfg = LabConfig(workdir=workdir, receipt_delay_ms=(5, 100), window=20, response_timeout_s=2.0,
                             backoff_initial_s=0.2, backoff_max_s=1.0, binds=2 if args.cluster else 1,
                             sim_extra={"cmcc": "tps = 150"},   # one carrier throttles throughout
                             store_url=args.store_url)
        self.receiver = Receiver()
        self.result = ChaosResult(members=max(1, args.cluster))
        self.accepted: list[str] = []
        self.mo_texts: list[str] = []
        self.sim: Child | None = None
        self.names = [f"m{i}" for i in range(1, args.cluster + 1)] if args.cluster else ["bridge"]
        self.members: dict[str, Child] = {}
        self.configs: dict[str, Path] = {}
        self._bridge_lock = threading.Lock()
        self._turn = 0
        self._load_done = threading.Event()
        self._watch_stop = threading.Event()

    # -- processes --------------------------------------------------------------------------

    @property
    def api(self) -> str:
        """The next live member's API: the load is spread as a load balancer would."""
        with self._bridge_lock:
            live = [c for c in self.members.values() if c.alive()] or list(self.members.values())
            self._turn += 1
            return f"http://127.0.0.1:{live[self._turn % len(live)].ready['api']}"

    @property
    def control(self) -> str:
        assert self.sim is not None
        return f"http://127.0.0.1:{self.sim.ready['control']}"

    def start(self) -> None:
        self.sim = start_sim(self.cfg)
        base = write_bridge_config(self.cfg, self.sim.ready["ports"], self.receiver)
        for name in self.names:
            # Named members (also the one daemon on PostgreSQL): a restart takes its work back at once.
            self.configs[name] = self._member_config(base, name) if self.args.store_url else base
        for name in self.names:
            self.members[name] = self._start_member(name, wait_bound=not self.args.cluster)
        if self.args.cluster:
            threading.Thread(target=self._watch_binds, daemon=True).start()

    def _member_config(self, base: Path, name: str) -> Path:
        """The lab config (on the shared PostgreSQL store) as cluster member ``name``."""
        text = base.read_text(encoding="utf-8")
        text += f'\n[cluster]\nnode = "{name}"\nfailover_s = {self.args.failover_s}\n'
        path = base.with_name(f"bridge-{name}.toml")
        path.write_text(text, encoding="utf-8")
        return path

    def _start_member(self, name: str, wait_bound: bool) -> Child:
        if not self.args.cluster:
            return start_bridge(self.cfg, self.configs[name], wait_bound=wait_bound)
        child = Child(f"bridge-{name}", [sys.executable, "-m", "bridge.cli", "run", "--config",
                                         str(self.configs[name])], self.cfg.workdir)
        child.wait_ready(30.0)
        return child

    def restart_bridge(self, name: str) -> None:
        with self._bridge_lock:
            # Ready, not bound: an SMSC may be refusing binds right now, as it would in production.
            self.members[name] = self._start_member(name, wait_bound=False)

    def _watch_binds(self) -> None:
        """The most binds the simulator ever saw up at once, per carrier (polled)."""
        peaks = self.result.bind_peaks
        while not self._watch_stop.wait(0.02):
            status, stats = http_json("GET", f"{self.control}/stats")
            if status == 200:
                for cid, c in stats["carriers"].items():
                    peaks[cid] = max(peaks.get(cid, 0), sum(c["binds"].values()))

    def fault(self, carrier: str, mode: str, **extra: Any) -> None:
        http_json("POST", f"{self.control}/faults", {"carrier": carrier, "mode": mode, **extra})
        self.result.faults.append(f"{carrier}:{mode}")

    # -- load -------------------------------------------------------------------------------

    def load(self) -> None:
        try:
            self._load()
        finally:
            self._load_done.set()

    def _load(self) -> None:
        numbers = _Numbers()
        request = 0
        sent = 0
        interval = 1.0 / self.args.rate
        while sent < self.args.messages:
            request += 1
            batch = [numbers.next() for _ in range(min(self.rng.randint(1, 20), self.args.messages - sent))]
            long_text = self.rng.random() < 0.2
            for attempt in range(1, 200):
                tag = f"r{request}a{attempt}"
                # In a long text the tag recurs every ~30 characters, so each part (67) holds one:
                # a part of a client's retry never looks like a resend of the first attempt's.
                body = f"chaos {tag} " + ("".join(f"{'长消息' * 8} {tag} " for _ in range(4)) if long_text
                                          else "hello")
                payload = {"from": CHANNEL, "to": batch, "body": body,
                           "statusCallback": self.receiver.url("/reports")}
                try:
                    status, answer = http_json("POST", f"{self.api}/v1/sms", payload, APP_TOKEN, timeout=10)
                except OSError:
                    status, answer = 0, None
                if status == 200:
                    self.accepted += [r["smsMsgId"] for r in answer["result"]]
                    break
                self.result.requests_retried += 1
                time.sleep(0.2)   # the daemon is down or draining: a client backs off and retries
            sent += len(batch)
            time.sleep(interval * len(batch))

    def inject_mo(self, n: int) -> None:
        text = f"chaos reply {n}"
        source = f"861380000{n:04d}"
        if source[-4:] in FAILING_SUFFIXES:
            source = source[:-1] + "9"
        for _ in range(100):
            status, _ = http_json("POST", f"{self.control}/mo",
                                  {"carrier": "cucc", "from": source, "to": CHANNEL, "text": text})
            if status == 200:
                self.mo_texts.append(text)
                return
            time.sleep(0.2)   # 409: no receiver bound right now (daemon restarting)

    # -- the run ----------------------------------------------------------------------------

    def run(self) -> ChaosResult:
        t0 = time.monotonic()
        self.start()
        loader = threading.Thread(target=self.load, daemon=True)
        loader.start()
        duration = self.args.messages / self.args.rate
        events = self._schedule(duration)
        mo_every = duration / max(1, self.args.mo)
        next_mo, mo_n = 0.0, 0
        start = time.monotonic()
        while not self._load_done.is_set() or events:
            now = time.monotonic() - start
            while events and events[0][0] <= now:
                _, action = events.pop(0)
                action()
            if mo_n < self.args.mo and now >= next_mo:
                mo_n += 1
                self.inject_mo(mo_n)
                next_mo += mo_every
            if now > duration * 4 + 120:
                raise TimeoutError("load did not finish")
            time.sleep(0.05)
        while mo_n < self.args.mo:
            mo_n += 1
            self.inject_mo(mo_n)
        loader.join()
        self.fault("*", "none")
        self.receiver.down = False
        self._settle()
        self._check()
        self.result.seconds = round(time.monotonic() - t0, 1)
        return self.result

    def _schedule(self, duration: float) -> list[tuple[float, Any]]:
        rng = self.rng
        at = lambda lo, hi: rng.uniform(lo * duration, hi * duration)  # noqa: E731
        events: list[tuple[float, Any]] = []
        carriers = ["cucc", "ctcc", "cbn", "intl"]

        def window(start: float, length: float, on: Any, off: Any) -> None:
            events.append((start, on))
            events.append((start + length, off))

        events.append((at(0.1, 0.3), lambda: self.fault(rng.choice(carriers), "drop")))
        c1 = rng.choice(carriers)
        window(at(0.2, 0.4), 1.5, lambda: self.fault(c1, "slow", latency_ms=[100, 400]),
               lambda: self.fault(c1, "none"))
        c2 = rng.choice(carriers)
        window(at(0.4, 0.6), 2.0, lambda: self.fault(c2, "refuse_binds"), lambda: self.fault(c2, "none"))
        events.append((at(0.4, 0.6) + 0.1, lambda: self.fault(c2, "drop")))
        c3 = rng.choice(carriers)
        window(at(0.6, 0.8), 1.5, lambda: self.fault(c3, "no_response"), lambda: self.fault(c3, "none"))
        window(at(0.3, 0.7), 2.0, self._receiver_down, self._receiver_up)
        for k in range(self.args.kills):
            events.append((at((k + 0.2) / self.args.kills, (k + 0.8) / self.args.kills), self._kill_and_restart))
        events.sort(key=lambda e: e[0])
        return events

    def _receiver_down(self) -> None:
        self.receiver.down = True
        self.result.faults.append("receiver:down")

    def _receiver_up(self) -> None:
        self.receiver.down = False

    def _kill_and_restart(self) -> None:
        name = self.rng.choice(self.names)
        self.members[name].kill9()
        self.result.kills += 1
        if self.args.cluster:   # dead past the failover time: the survivors take its work over
            time.sleep(self.args.failover_s * self.rng.uniform(1.2, 2.0))
        else:                   # the daemon stays dead for a moment, as in a real crash
            time.sleep(self.rng.uniform(0.2, 0.8))
        self.restart_bridge(name)

    # -- verdict ----------------------------------------------------------------------------

    def _settle(self) -> None:
        wanted = set(self.accepted)

        def all_reported() -> bool:
            got = {b["smsMsgId"] for b in self.receiver.acked("/reports")}
            mo = {b["body"] for b in self.receiver.acked("/uplink")}
            return wanted <= got and set(self.mo_texts) <= mo

        try:
            wait_until(all_reported, self.args.settle_timeout, "every report and uplink")
        except TimeoutError as exc:
            print(f"chaos: {exc}", file=sys.stderr)
        self._watch_stop.set()
        for child in self.members.values():
            child.stop()

    def _check(self) -> None:
        """Count from what the receiver and the simulator saw, not from the bridge's store."""
        r = self.result
        r.messages_accepted = len(self.accepted)
        r.mo_injected = len(self.mo_texts)
        reports = self.receiver.acked("/reports")
        ids = self.receiver.acked_ids("/reports")
        r.pushes_without_webhook_id = sum(1 for i in ids if not i)
        per_message: dict[str, set[tuple[str | None, str]]] = {}
        for body, webhook_id in zip(reports, ids, strict=True):
            per_message.setdefault(body["smsMsgId"], set()).add((webhook_id, body.get("status", "")))
        accepted = set(self.accepted)
        r.final = sum(1 for m in self.accepted if m in per_message)
        r.missing_reports = r.messages_accepted - r.final
        if r.missing_reports:
            for line in self._where_they_are([m for m in self.accepted if m not in per_message][:20]):
                print(f"chaos: no report for {line}", file=sys.stderr)
        r.reports_for_unanswered = len(set(per_message) - accepted)
        r.conflicting_reports = sum(1 for seen in per_message.values() if len(seen) > 1)
        r.duplicate_pushes_seen = sum(n - 1 for n in Counter(ids).values() if n > 1)
        uplinks = {b["body"] for b in self.receiver.acked("/uplink")}
        r.mo_missing = sum(1 for t in self.mo_texts if t not in uplinks)
        _, answer = http_json("GET", f"{self.control}/submits?accepted=1&limit=10000000")
        seen = Counter(_segment_key(s) for s in answer["submits"])
        dups = [(key, n) for key, n in seen.items() if n > 1]
        r.duplicate_submits = sum(n - 1 for _, n in dups)
        flagged = self._flagged_segments()
        r.unflagged_duplicates = sum(1 for key, _ in dups if (key[0], key[1]) not in flagged)
        r.binds_over_limit = sum(1 for n in r.bind_peaks.values() if n > self.cfg.binds)

    def _where_they_are(self, message_ids: list[str]) -> list[str]:
        """What the store says of messages without a report: their state, segments and pushes."""
        marks = ",".join(["%s" if self.cfg.store_url else "?"] * len(message_ids))
        queries = (
            f"SELECT id, state, status, carrier FROM messages WHERE id IN ({marks})",
            f"SELECT message_id, seq, state, status, carrier_msg_id, attempts, possible_duplicate, dispatched_by"
            f" FROM segments WHERE message_id IN ({marks})",
            f"SELECT ref_id, state, attempts, claimed_by, last_error FROM outbox WHERE ref_id IN ({marks})",
            # The receipts logged for their segments' carrier ids, and what became of each.
            f"SELECT s.message_id, r.id, r.canonical_id, r.segment_id, r.outcome, r.received_at FROM receipts_raw r"
            f" JOIN segments s ON s.carrier = r.carrier AND s.carrier_msg_id = r.canonical_id"
            f" WHERE s.message_id IN ({marks})",
        )
        found: dict[str, list[str]] = {m: [] for m in message_ids}
        try:
            if self.cfg.store_url:
                import psycopg

                with psycopg.connect(self.cfg.store_url) as pg:
                    results = [list(pg.execute(q, message_ids)) for q in queries]
            else:
                con = sqlite3.connect(f"file:{self.cfg.workdir / 'bridge.db'}?mode=ro", uri=True, timeout=5)
                try:
                    results = [con.execute(q, message_ids).fetchall() for q in queries]
                finally:
                    con.close()
        except Exception as exc:  # noqa: BLE001 (a diagnostic only: say why it is missing)
            return [f"{', '.join(message_ids)} (store not readable: {exc})"]
        for kind, rows in zip(("message", "segment", "push", "receipt"), results, strict=True):
            for row in rows:
                found.setdefault(row[0], []).append(f"{kind} {list(row[1:])}")
        return [f"{m}: {'; '.join(found[m]) or 'not in the store'}" for m in message_ids]

    def _flagged_segments(self) -> set[tuple[str, int]]:
        """(destination, part) of segments the bridge flagged possibly sent twice: only it knows."""
        query = "SELECT destination_addr, seq FROM segments WHERE possible_duplicate = 1"
        if self.cfg.store_url:
            import psycopg

            with psycopg.connect(self.cfg.store_url) as pg:
                return {(dest.lstrip("+"), seq) for dest, seq in pg.execute(query)}
        con = sqlite3.connect(f"file:{self.cfg.workdir / 'bridge.db'}?mode=ro", uri=True, timeout=5)
        try:
            return {(dest.lstrip("+"), seq) for dest, seq in con.execute(query)}
        finally:
            con.close()

    def close(self) -> None:
        self._watch_stop.set()
        for child in (*self.members.values(), self.sim):
            if child is not None:
                child.stop(10)
        self.receiver.close()


def _segment_key(submit: dict[str, Any]) -> tuple[str, int, int, str]:
    """One segment as the SMSC saw it: destination, part number, parts, text of the part.

    Recipients are unique per message in the chaos load, so this names a segment.
    """
    concat = submit.get("udh") or submit.get("sar") or {"seq": 1, "total": 1}
    return (submit["destination_addr"].lstrip("+"), int(concat["seq"]), int(concat["total"]),
            submit.get("text") or "")


def _print(result: ChaosResult) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="chaos run" + ("  LOSS" if result.lost else "  no loss"))
    table.add_column("check")
    table.add_column("value", justify="right")
    for key, value in asdict(result).items():
        if key not in ("faults", "bind_peaks"):
            table.add_row(key.replace("_", " "), str(value))
    table.add_row("faults injected", ", ".join(result.faults))
    if result.bind_peaks:
        table.add_row("bind peaks", ", ".join(f"{c} {n}" for c, n in sorted(result.bind_peaks.items())))
    Console().print(table)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="chaos", description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=3000)
    p.add_argument("--rate", type=float, default=150.0, help="offered messages per second")
    p.add_argument("--mo", type=int, default=50, help="MO replies to inject")
    p.add_argument("--kills", type=int, default=3, help="kill -9 of the daemon (at least 2 recommended)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--settle-timeout", type=float, default=180.0)
    p.add_argument("--cluster", type=int, default=0, metavar="N",
                   help="N cluster members on --store-url instead of one daemon")
    p.add_argument("--failover-s", type=float, default=3.0, help="[cluster] failover_s in cluster mode")
    p.add_argument("--json-out", type=Path, default=None)
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--store-url", default=None, metavar="URL",
                   help="run the daemon (or the --cluster members) on this (empty) PostgreSQL database")
    args = p.parse_args(argv)
    if args.messages < 1 or args.rate <= 0 or args.kills < 0 or args.mo < 0:
        p.error("--messages, --rate must be positive; --kills, --mo not negative")
    if args.cluster and not args.store_url:
        p.error("--cluster needs --store-url (PostgreSQL)")
    workdir = Path(tempfile.mkdtemp(prefix="smpp-chaos-"))
    chaos = Chaos(args, workdir)
    try:
        result = chaos.run()
    finally:
        chaos.close()
    _print(result)
    if args.json_out:
        args.json_out.write_text(json.dumps({**asdict(result), "lost": result.lost}, indent=2))
    if args.keep:
        print(f"work directory: {workdir}", file=sys.stderr)
    else:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if result.lost else 0


if __name__ == "__main__":
    sys.exit(main())
