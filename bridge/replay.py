"""Operator replays: re-push status reports, feed raw receipts back through the matcher.

Both work beside a running daemon without racing it: every change goes through the
store's guarded updates (a segment or message is finalised once; a report is queued once
per message), and pushes go through the outbox. If no daemon holds the store, the tool
pushes the outbox itself with the daemon's own :class:`~bridge.outbox.Pusher`.
They run without a reactor, so the store they get is opened inline (every call has
finished when it returns; :func:`~bridge.store.result_of` reads it).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bridge.finaliser import Finaliser
from bridge.matching import ReceiptMatcher, ReceiptOutcome
from bridge.receipts import Receipt, ReceiptParseError, StatusMap, receipt_from_json
from bridge.store import Store, result_of
from carriers.profiles import CarrierProfile

__all__ = ["ReceiptSource", "ReplaySummary", "queue_report_replays", "replay_receipts"]


@dataclass
class ReplaySummary:
    processed: int = 0
    matched: int = 0
    queued: int = 0
    skipped: int = 0
    failed: int = 0
    pushed: int = 0
    details: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        return {"processed": self.processed, "matched": self.matched, "queued": self.queued,
                "pushed": self.pushed, "skipped": self.skipped, "failed": self.failed}


def queue_report_replays(store: Store, *, since: float | None, until: float | None, statuses: Sequence[str],
                         channel: str | None, recipient: str | None, ids: Sequence[str], url: str | None,
                         dry_run: bool, now: float, progress: Callable[[int], None] = lambda n: None,
                         ) -> tuple[ReplaySummary, list[int]]:
    """Queue a ``replay`` push of each selected message's report; returns the outbox ids."""
    summary = ReplaySummary()
    outbox_ids: list[int] = []
    for msg in result_of(store.messages.report_candidates(since=since, until=until, statuses=statuses,
                                                          channel=channel, recipient=recipient, ids=ids)):
        summary.processed += 1
        progress(1)
        original = result_of(store.outbox.report_copy(msg.id))
        target = url or (original.url if original else msg.status_callback)
        if original is None or not target:
            summary.skipped += 1
            summary.details.append(f"{msg.id}: no report or no callback URL")
            continue
        if dry_run:
            summary.queued += 1
            summary.details.append(f"{msg.id} -> {target}")
            continue
        if result_of(store.outbox.pending_replay(msg.id)):
            summary.skipped += 1
            summary.details.append(f"{msg.id}: a replay is already pending")
            continue
        outbox_id = result_of(store.outbox.queue_replay(msg.id, target, original.payload, now))
        outbox_ids.append(outbox_id)
        summary.queued += 1
    result_of(store.flush())
    return summary, outbox_ids


@dataclass(frozen=True, slots=True)
class ReceiptSource:
    carrier: str
    receipt: Receipt | None
    raw_id: int | None
    error: str | None = None


def receipts_from_store(store: Store, *, since: float | None, until: float | None, carrier: str | None,
                        include_matched: bool) -> Iterable[ReceiptSource]:
    for raw in result_of(store.receipts.raw(since=since, until=until, unmatched_only=not include_matched,
                                            carrier=carrier)):
        try:
            yield ReceiptSource(raw.carrier, receipt_from_json(raw.receipt_json), raw.id)
        except ReceiptParseError as exc:
            yield ReceiptSource(raw.carrier, None, raw.id, str(exc))


def receipts_from_file(path: Path) -> Iterable[ReceiptSource]:
    """JSON lines: ``{"carrier": "cmcc", "receipt": {...}}`` (the raw log's format) per line."""
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                yield ReceiptSource(str(obj["carrier"]), receipt_from_json(obj["receipt"]), None)
            except (ValueError, KeyError, TypeError, ReceiptParseError) as exc:
                yield ReceiptSource("", None, None, f"{path}:{lineno}: {exc}")


def replay_receipts(store: Store, profiles: dict[str, CarrierProfile], sources: Iterable[ReceiptSource], *,
                    dry_run: bool, now: Callable[[], float],
                    progress: Callable[[int], None] = lambda n: None) -> ReplaySummary:
    """Apply receipts again; already applied ones change nothing and queue no second report."""
    summary = ReplaySummary()
    finaliser = Finaliser(store, now=now)
    matcher = ReceiptMatcher(store, finaliser, StatusMap.load(), profiles, now=now)
    for src in sources:
        summary.processed += 1
        progress(1)
        if src.receipt is None or src.carrier not in profiles:
            summary.failed += 1
            summary.details.append(src.error or f"unknown carrier {src.carrier!r}")
            continue
        if dry_run:
            cid = src.receipt.canonical_id(profiles[src.carrier].receipt_id_dialect)
            match = result_of(store.messages.find_segment(src.carrier, cid))
            summary.matched += match is not None
            summary.skipped += match is None
            continue
        before = finaliser.reports_queued
        outcome = result_of(matcher.apply(src.carrier, src.receipt, raw_id=src.raw_id))
        if outcome == ReceiptOutcome.APPLIED:
            summary.matched += 1
        elif outcome in (ReceiptOutcome.DUPLICATE, ReceiptOutcome.INTERMEDIATE):
            summary.matched += 1
            summary.skipped += 1
        else:
            summary.skipped += 1
        summary.queued += finaliser.reports_queued - before
    result_of(store.flush())
    return summary
