"""Operator commands: ``smpp-bridge replay reports|receipts`` and ``smpp-bridge export``.

Long runs show a rich progress bar on a terminal and end with a summary table;
``--json`` prints one machine-readable JSON object instead. Bad arguments and unreadable
files get one clear line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from bridge.config import BridgeConfig
from bridge.finaliser import iso_time
from bridge.logs import mask_number
from bridge.replay import (
    ReplaySummary,
    queue_report_replays,
    receipts_from_file,
    receipts_from_store,
    replay_receipts,
)
from bridge.store import Store, StoreError, StoreMissingError, lock_store, open_store, result_of
from bridge.store.records import PushState
from carriers.profiles import load_profiles

__all__ = ["add_tool_commands", "parse_time"]

EXPORT_FIELDS = ("message_id", "recipient", "carrier", "channel", "segments", "created_time", "submit_time",
                 "state", "status", "org_code", "report_state")


class ToolError(Exception):
    """One line for the operator; exit status 2."""


def parse_time(text: str) -> float:
    """Epoch seconds from ISO 8601 (``2026-11-25``, ``2026-11-25T04:00:00Z``), an epoch, or ``-2h``."""
    value = text.strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value[:1] == "-" and value[-1:] in units and value[1:-1].replace(".", "", 1).isdigit():
        return time.time() - float(value[1:-1]) * units[value[-1]]
    try:
        return float(value)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time (use 2026-11-25, 2026-11-25T04:00:00Z, an epoch, or -2h)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def add_tool_commands(sub: Any) -> None:
    replay = sub.add_parser("replay", help="re-push reports or re-apply receipts from the store")
    rsub = replay.add_subparsers(dest="replay_command", metavar="WHAT", required=True)

    rep = rsub.add_parser("reports", help="re-push status reports")
    _common(rep)
    rep.add_argument("--status", action="append", default=[], help="only this final status (repeatable)")
    rep.add_argument("--channel", help="only this channel number (from)")
    rep.add_argument("--to", dest="recipient", help="only this recipient (+86...)")
    rep.add_argument("--id", dest="ids", action="append", default=[], help="only this smsMsgId (repeatable)")
    rep.add_argument("--url", help="push to this URL instead of the message's statusCallback")
    rep.set_defaults(handler=_replay_reports)

    rec = rsub.add_parser("receipts", help="feed raw receipts back through the matcher")
    _common(rec)
    rec.add_argument("--carrier", help="only receipts of this carrier")
    rec.add_argument("--all", action="store_true", help="also receipts that already matched (default: unmatched)")
    rec.add_argument("--file", type=Path, help="JSON lines {carrier, receipt} instead of the store's raw log")
    rec.set_defaults(handler=_replay_receipts)

    exp = sub.add_parser("export", help="export send records as CSV or JSON lines")
    exp.add_argument("--config", type=Path, default=None)
    exp.add_argument("--since", type=parse_time, default=None)
    exp.add_argument("--until", type=parse_time, default=None)
    exp.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    exp.add_argument("--output", type=Path, default=None, help="file to write (default: stdout)")
    exp.add_argument("--no-redact", action="store_true", help="write full phone numbers")
    exp.set_defaults(handler=_export)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=None)
    p.add_argument("--since", type=parse_time, default=None, help="from this time (ISO 8601, epoch, -2h)")
    p.add_argument("--until", type=parse_time, default=None)
    p.add_argument("--dry-run", action="store_true", help="list what would be done, change nothing")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for pushes to be acknowledged")


def _open_store(config: BridgeConfig) -> Store:
    """The configured store, inline: every call has finished when it returns."""
    try:
        return open_store(config.store, inline=True, create=False)
    except StoreMissingError as exc:
        raise ToolError(f"{exc} (run the daemon first, or pass --config)") from None
    except StoreError as exc:
        raise ToolError(str(exc)) from None


@contextmanager
def _progress(enabled: bool, label: str) -> Iterator[Callable[[int], None]]:
    if not enabled or not sys.stderr.isatty():
        yield lambda n: None
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task(label, total=None)
        yield lambda n: bar.advance(task, n)


def _summary(summary: ReplaySummary, args: argparse.Namespace, title: str) -> None:
    if args.json:
        out = summary.as_dict()
        if args.dry_run:
            out["dry_run"] = True
            out["items"] = summary.details
        print(json.dumps(out))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if args.dry_run or summary.details:
        for line in summary.details[:1000]:
            console.print(line, highlight=False)
    table = Table(title=title + (" (dry run)" if args.dry_run else ""))
    for name in ("processed", "matched", "queued", "pushed", "skipped", "failed"):
        table.add_column(name, justify="right")
    d = summary.as_dict()
    table.add_row(*(str(d[k]) for k in ("processed", "matched", "queued", "pushed", "skipped", "failed")))
    console.print(table)


def _push_or_hand_over(config: BridgeConfig, store: Store, lock: Any, summary: ReplaySummary,
                       outbox_ids: list[int] | None, timeout: float) -> None:
    """Without a daemon, push now with the daemon's Pusher; with one, its pusher does it."""
    if lock is None:
        summary.details.append("a daemon holds the store: it pushes what was queued")
        return
    from bridge.outbox import Pusher
    from bridge.webhooks import WebhookKeys

    def run(reactor: Any) -> Any:
        live = open_store(config.store, reactor=reactor)
        pusher = Pusher(live, config.callbacks, reactor=reactor, keys=WebhookKeys.from_config(config))
        pusher.start()
        deadline = reactor.seconds() + timeout

        async def pending() -> int:
            if outbox_ids is not None:
                states = await live.outbox.states_of(outbox_ids)
                return sum(s.count for s in states if s.state == PushState.PENDING)
            return await live.outbox.pending_count()

        async def wait() -> None:
            while await pending() and reactor.seconds() <= deadline:
                await deferLater(reactor, 0.05)
            await pusher.stop()
            await live.close()

        return Deferred.fromCoroutine(wait())

    result_of(store.close())
    _react(run)
    verify = open_store(config.store, inline=True)
    if outbox_ids is not None:
        states = result_of(verify.outbox.states_of(outbox_ids))
        summary.pushed = sum(s.count for s in states if s.state == PushState.ACKED)
    result_of(verify.close())


def _react(fn: Callable[[Any], Any]) -> None:
    """Run ``fn`` on the reactor until its Deferred fires (no sys.exit, unlike task.react)."""
    from twisted.internet import reactor
    from twisted.internet.defer import maybeDeferred

    def go() -> None:
        maybeDeferred(fn, reactor).addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(go)
    reactor.run(installSignalHandlers=True)


def _replay_reports(config: BridgeConfig, args: argparse.Namespace) -> int:
    lock = None if args.dry_run else lock_store(config.store)
    store = _open_store(config)
    with _progress(not args.json, "reports") as progress:
        summary, ids = queue_report_replays(
            store, since=args.since, until=args.until, statuses=args.status, channel=args.channel,
            recipient=args.recipient, ids=args.ids, url=args.url, dry_run=args.dry_run, now=time.time(),
            progress=progress)
    if not args.dry_run and ids:
        _push_or_hand_over(config, store, lock, summary, ids, args.timeout)
    else:
        result_of(store.close())
    _summary(summary, args, "replay reports")
    return 0


def _replay_receipts(config: BridgeConfig, args: argparse.Namespace) -> int:
    if args.file is not None and not args.file.is_file():
        raise ToolError(f"{args.file}: no such file")
    lock = None if args.dry_run else lock_store(config.store)
    store = _open_store(config)
    profiles, _ = load_profiles()
    if args.file is not None:
        sources = receipts_from_file(args.file)
    else:
        sources = receipts_from_store(store, since=args.since, until=args.until, carrier=args.carrier,
                                      include_matched=args.all)
    with _progress(not args.json, "receipts") as progress:
        summary = replay_receipts(store, profiles, list(sources), dry_run=args.dry_run, now=time.time,
                                  progress=progress)
    if not args.dry_run and summary.queued:
        before = result_of(store.outbox.pending_count())
        _push_or_hand_over(config, store, lock, summary, None, args.timeout)
        summary.pushed = summary.queued if lock is not None and before else 0
    else:
        result_of(store.close())
    _summary(summary, args, "replay receipts")
    return 0 if summary.failed == 0 else 1


def _export(config: BridgeConfig, args: argparse.Namespace) -> int:
    store = _open_store(config)
    out = args.output.open("w", encoding="utf-8", newline="") if args.output else sys.stdout
    count = 0
    try:
        writer = csv.DictWriter(out, fieldnames=EXPORT_FIELDS) if args.format == "csv" else None
        if writer:
            writer.writeheader()
        for row in result_of(store.messages.export_rows(args.since, args.until)):
            record = {
                "message_id": row.message_id,
                "recipient": row.recipient if args.no_redact else mask_number(row.recipient),
                "carrier": row.carrier or "",
                "channel": row.channel,
                "segments": row.segments,
                "created_time": iso_time(row.created_at),
                "submit_time": iso_time(row.submit_time) if row.submit_time else "",
                "state": row.state,
                "status": row.status or "",
                "org_code": row.org_code or "",
                "report_state": row.report_state,
            }
            if writer:
                writer.writerow(record)
            else:
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    finally:
        if args.output:
            out.close()
        result_of(store.close())
    print(f"exported {count} records", file=sys.stderr)
    return 0


def run_tool(handler: Callable[[BridgeConfig, argparse.Namespace], int], config: BridgeConfig,
             args: argparse.Namespace) -> int:
    try:
        return handler(config, args)
    except (ToolError, StoreError) as exc:
        print(f"smpp-bridge: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"smpp-bridge: {exc.filename or ''}: {exc.strerror}", file=sys.stderr)
        return 2
