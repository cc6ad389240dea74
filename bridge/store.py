"""The durable store: every SQL statement of the bridge lives here.

SQLite in WAL mode through sqlite-utils, on the reactor thread. Writes go into one open
transaction that is committed every ``commit_interval`` (group commit); anything that
must not happen before the data is durable (answering an HTTP request, acknowledging a
deliver_sm, pushing a report) waits on :meth:`Store.durable`. One fsync then covers
hundreds of state changes. A backend for PostgreSQL would implement the same methods.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from sqlite_utils import Database, Migrations
from twisted.internet.defer import Deferred

from bridge.models import (
    MessageRecord,
    NewMessage,
    NewMo,
    OutboxItem,
    SegmentRecord,
)

__all__ = ["SegmentDetail", "SegmentMatch", "Store", "StoreError", "try_lock_store"]

log = structlog.get_logger("store")

migrations = Migrations("smpp_bridge")


@migrations()
def m001_initial(db: Database) -> None:
    db.executescript(
        """
        CREATE TABLE messages (
            id TEXT PRIMARY KEY, app_id TEXT NOT NULL, channel TEXT NOT NULL,
            recipient TEXT NOT NULL, carrier TEXT, klass TEXT NOT NULL, text TEXT NOT NULL,
            content_hash TEXT NOT NULL, status_callback TEXT NOT NULL, extend TEXT NOT NULL,
            created_at REAL NOT NULL, state TEXT NOT NULL, status TEXT, org_code TEXT,
            release_at REAL, total INTEGER NOT NULL, final_at REAL, final_seq INTEGER,
            reported INTEGER NOT NULL DEFAULT 0, counted INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX messages_recipient ON messages(recipient, created_at) WHERE counted = 1;
        CREATE INDEX messages_held ON messages(release_at) WHERE state = 'held';
        CREATE INDEX messages_created ON messages(created_at);
        CREATE INDEX messages_channel_recipient ON messages(channel, recipient, created_at);
        CREATE TABLE segments (
            id INTEGER PRIMARY KEY, message_id TEXT NOT NULL, carrier TEXT NOT NULL,
            seq INTEGER NOT NULL, total INTEGER NOT NULL, source_addr TEXT NOT NULL,
            destination_addr TEXT NOT NULL, short_message BLOB NOT NULL,
            data_coding INTEGER NOT NULL, esm_class INTEGER NOT NULL, ref INTEGER,
            sar INTEGER NOT NULL, state TEXT NOT NULL, possible_duplicate INTEGER NOT NULL DEFAULT 0,
            attempts INTEGER NOT NULL DEFAULT 0, carrier_msg_id TEXT, raw_msg_id TEXT,
            submit_status INTEGER, submitted_at REAL, status TEXT, org_code TEXT, done_at REAL
        );
        CREATE INDEX segments_message ON segments(message_id, seq);
        CREATE INDEX segments_queued ON segments(carrier, id) WHERE state = 'queued';
        CREATE INDEX segments_dispatched ON segments(id) WHERE state = 'dispatched';
        CREATE INDEX segments_carrier_id ON segments(carrier, carrier_msg_id);
        CREATE INDEX segments_waiting ON segments(submitted_at) WHERE state = 'submitted';
        CREATE TABLE receipts_raw (
            id INTEGER PRIMARY KEY, carrier TEXT NOT NULL, received_at REAL NOT NULL,
            canonical_id TEXT NOT NULL, receipt TEXT NOT NULL, segment_id INTEGER,
            outcome TEXT NOT NULL
        );
        CREATE INDEX receipts_unmatched ON receipts_raw(carrier, canonical_id) WHERE segment_id IS NULL;
        CREATE INDEX receipts_received ON receipts_raw(received_at);
        CREATE TABLE outbox (
            id INTEGER PRIMARY KEY, kind TEXT NOT NULL, ref_id TEXT NOT NULL, url TEXT NOT NULL,
            payload TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL, next_attempt_at REAL NOT NULL, acked_at REAL,
            last_error TEXT
        );
        CREATE UNIQUE INDEX outbox_once ON outbox(kind, ref_id) WHERE kind IN ('report', 'uplink');
        CREATE INDEX outbox_due ON outbox(next_attempt_at) WHERE state = 'pending';
        CREATE TABLE blacklist (
            channel TEXT NOT NULL, number TEXT NOT NULL, created_at REAL NOT NULL,
            mo_id TEXT, PRIMARY KEY (channel, number)
        );
        CREATE TABLE mo (
            id TEXT PRIMARY KEY, carrier TEXT NOT NULL, source TEXT NOT NULL,
            destination TEXT NOT NULL, channel TEXT, app_id TEXT, body TEXT NOT NULL,
            created_at REAL NOT NULL, incomplete INTEGER NOT NULL, unsubscribe INTEGER NOT NULL,
            downlink_id TEXT
        );
        CREATE INDEX mo_created ON mo(created_at);
        CREATE TABLE mo_parts (
            key TEXT NOT NULL, seq INTEGER NOT NULL, total INTEGER NOT NULL, text TEXT NOT NULL,
            received_at REAL NOT NULL, carrier TEXT NOT NULL, source TEXT NOT NULL,
            destination TEXT NOT NULL, PRIMARY KEY (key, seq)
        );
        """
    )


def try_lock_store(path: Path | str) -> Any | None:
    """An exclusive advisory lock on ``<db>.lock``: one daemon per store.

    Operator tools take it too: if they get it, no daemon runs and they push themselves;
    if not, they only queue work and the running daemon's pusher does the pushing.
    Returns the open lock file (keep it open to hold the lock) or None if it is held.
    """
    import fcntl

    if str(path) == ":memory:":
        return open(os.devnull)  # noqa: SIM115 (nothing to lock)
    lock_path = Path(f"{path}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(lock_path, "a+")  # noqa: SIM115 (held for the life of the process)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


class StoreError(RuntimeError):
    """The store could not commit: nothing that waited on it may be acted upon."""


@dataclass(frozen=True, slots=True)
class SegmentMatch:
    segment_id: int
    message_id: str
    state: str
    total: int


@dataclass(frozen=True, slots=True)
class SegmentDetail:
    seq: int
    state: str
    status: str | None
    org_code: str | None
    carrier_msg_id: str | None
    raw_msg_id: str | None
    submit_status: int | None
    submitted_at: float | None
    done_at: float | None
    possible_duplicate: bool


_SEGMENT_COLUMNS = (
    "s.id, s.message_id, s.carrier, s.seq, s.total, s.source_addr, s.destination_addr, "
    "s.short_message, s.data_coding, s.esm_class, s.ref, s.sar, s.possible_duplicate"
)
_MESSAGE_COLUMNS = (
    "id, app_id, channel, recipient, carrier, klass, state, status, org_code, total, "
    "status_callback, extend, created_at, final_at, reported"
)


def _time_range(column: str, since: float | None, until: float | None) -> tuple[list[str], list[Any]]:
    """WHERE clauses and parameters for ``since <= column < until`` (either side optional)."""
    where, params = ["1=1"], []
    if since is not None:
        where.append(f"{column} >= ?")
        params.append(since)
    if until is not None:
        where.append(f"{column} < ?")
        params.append(until)
    return where, params


class Store:
    """SQLite store with group commit. All methods run on the reactor thread."""

    def __init__(self, path: Path | str, *, clock: Any, commit_interval_s: float = 0.005,
                 synchronous: str = "FULL") -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = Database(str(path)) if str(path) != ":memory:" else Database(memory=True)
        self.db.execute("PRAGMA busy_timeout = 5000")
        if str(path) != ":memory:":
            self.db.enable_wal()
        self.db.execute(f"PRAGMA synchronous = {synchronous}")
        migrations.apply(self.db)
        self._conn: sqlite3.Connection = self.db.conn
        self._clock = clock
        self._interval = commit_interval_s
        self._waiters: list[Deferred[None]] = []
        self._timer: Any = None
        self.commits = 0
        self.commit_seconds = 0.0
        self.closed = False

    # -- group commit -------------------------------------------------------------

    def _w(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        if not self._conn.in_transaction:
            self._conn.execute("BEGIN IMMEDIATE")
        return self._conn.execute(sql, params)

    def _wm(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        if not self._conn.in_transaction:
            self._conn.execute("BEGIN IMMEDIATE")
        self._conn.executemany(sql, rows)

    def _r(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._conn.execute(sql, params).fetchall()

    def durable(self) -> Deferred[None]:
        """A Deferred that fires once everything written so far is committed."""
        d: Deferred[None] = Deferred()
        if not self._conn.in_transaction:
            d.callback(None)
            return d
        self._waiters.append(d)
        if self._timer is None:
            self._timer = self._clock.callLater(self._interval, self.flush)
        return d

    def flush(self) -> None:
        """Commit now and release every waiter."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        waiters, self._waiters = self._waiters, []
        if self._conn.in_transaction:
            t0 = time.perf_counter()
            try:
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                log.critical("store.commit_failed", error=str(exc))
                with contextlib.suppress(sqlite3.Error):
                    self._conn.rollback()
                for d in waiters:
                    d.errback(StoreError(f"commit failed: {exc}"))
                raise StoreError(f"commit failed: {exc}") from exc
            self.commit_seconds += time.perf_counter() - t0
            self.commits += 1
        for d in waiters:
            d.callback(None)

    def start_background_checkpoints(self, interval_s: float = 1.0) -> None:
        """Checkpoint the WAL from a worker thread on its own connection.

        SQLite's automatic checkpoint runs inside whichever COMMIT crosses the WAL size
        limit and fsyncs the database file there, which stalled the reactor for tens of
        milliseconds (the p99 of intake->submit_sm). A PASSIVE checkpoint on another
        connection never blocks the writer.
        """
        if str(self.path) == ":memory:":
            return
        self.db.execute("PRAGMA wal_autocheckpoint = 0")
        from twisted.internet.threads import deferToThreadPool

        path = str(self.path)
        state: dict[str, Any] = {"conn": None, "running": False}

        def checkpoint() -> None:
            if state["conn"] is None:
                state["conn"] = sqlite3.connect(path, check_same_thread=False, timeout=5)
            state["conn"].execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

        def tick() -> None:
            if self.closed:
                return
            if not state["running"]:
                state["running"] = True
                d = deferToThreadPool(self._clock, self._clock.getThreadPool(), checkpoint)
                d.addErrback(lambda f: log.warning("store.checkpoint_failed", error=str(f.value)))
                d.addBoth(lambda _: state.update(running=False))
            self._checkpoint_timer = self._clock.callLater(interval_s, tick)

        self._checkpoint_timer = self._clock.callLater(interval_s, tick)

    def close(self) -> None:
        if self.closed:
            return
        timer = getattr(self, "_checkpoint_timer", None)
        if timer is not None and timer.active():
            timer.cancel()
        self.flush()
        self.closed = True
        self.db.close()

    # -- intake -------------------------------------------------------------------

    def insert_messages(self, messages: Sequence[NewMessage]) -> None:
        self._wm(
            "INSERT INTO messages (id, app_id, channel, recipient, carrier, klass, text, content_hash,"
            " status_callback, extend, created_at, state, status, org_code, release_at, total,"
            " final_at, counted) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [(m.id, m.app_id, m.channel, m.recipient, m.carrier, m.klass, m.text, m.content_hash,
              m.status_callback, m.extend, m.created_at, m.state, m.status, m.org_code,
              m.release_at, max(1, len(m.segments)), m.created_at if m.status else None,
              int(m.counted)) for m in messages],
        )
        seg_state = {"held": "held", "queued": "queued"}
        self._wm(
            "INSERT INTO segments (message_id, carrier, seq, total, source_addr, destination_addr,"
            " short_message, data_coding, esm_class, ref, sar, state) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            [(m.id, m.carrier, s.seq, s.total, m.channel, m.recipient, s.short_message,
              s.data_coding, s.esm_class, s.ref, int(s.sar), seg_state[m.state])
             for m in messages if m.state in seg_state for s in m.segments],
        )

    def recent_sends(self, recipient: str, since: float) -> list[tuple[float, str]]:
        """(created_at, content_hash) of counted messages to ``recipient`` since ``since``."""
        return self._r(
            "SELECT created_at, content_hash FROM messages WHERE recipient = ? AND counted = 1"
            " AND created_at > ?", (recipient, since))

    # -- blacklist ----------------------------------------------------------------

    def is_blacklisted(self, channel: str, number: str) -> bool:
        return bool(self._r("SELECT 1 FROM blacklist WHERE channel = ? AND number = ?", (channel, number)))

    def add_blacklist(self, channel: str, number: str, now: float, mo_id: str | None) -> bool:
        cur = self._w("INSERT OR IGNORE INTO blacklist (channel, number, created_at, mo_id) VALUES (?,?,?,?)",
                      (channel, number, now, mo_id))
        return cur.rowcount > 0

    def remove_blacklist(self, channel: str, number: str) -> bool:
        return self._w("DELETE FROM blacklist WHERE channel = ? AND number = ?", (channel, number)).rowcount > 0

    def get_blacklist(self, channel: str, number: str) -> dict[str, Any] | None:
        rows = list(self.db.query("SELECT channel, number, created_at, mo_id FROM blacklist"
                                  " WHERE channel = ? AND number = ?", (channel, number)))
        return rows[0] if rows else None

    def list_blacklist(self, channel: str | None, limit: int = 1000) -> list[dict[str, Any]]:
        if channel:
            return list(self.db.query("SELECT channel, number, created_at, mo_id FROM blacklist"
                                      " WHERE channel = ? ORDER BY created_at DESC LIMIT ?", (channel, limit)))
        return list(self.db.query("SELECT channel, number, created_at, mo_id FROM blacklist"
                                  " ORDER BY created_at DESC LIMIT ?", (limit,)))

    # -- dispatch -----------------------------------------------------------------

    def take_queued(self, carrier: str, limit: int) -> list[SegmentRecord]:
        """Oldest queued segments of ``carrier``, marked dispatched (in the open transaction)."""
        if limit <= 0:
            return []
        rows = self._r(f"SELECT {_SEGMENT_COLUMNS} FROM segments s WHERE s.carrier = ? AND s.state = 'queued'"
                       " ORDER BY s.id LIMIT ?", (carrier, limit))
        if not rows:
            return []
        self._wm("UPDATE segments SET state = 'dispatched', attempts = attempts + 1 WHERE id = ?",
                 [(r[0],) for r in rows])
        return [SegmentRecord(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10],
                              bool(r[11]), bool(r[12])) for r in rows]

    def requeue(self, segment_ids: Iterable[int], possible_duplicate: bool) -> None:
        self._wm("UPDATE segments SET state = 'queued', possible_duplicate = possible_duplicate OR ?"
                 " WHERE id = ? AND state = 'dispatched'",
                 [(int(possible_duplicate), sid) for sid in segment_ids])

    def requeue_all_dispatched(self) -> int:
        """After a crash: nothing in flight survived, so resend it, flagged as a possible duplicate."""
        return self._w("UPDATE segments SET state = 'queued', possible_duplicate = 1"
                       " WHERE state = 'dispatched'").rowcount

    def queued_carriers(self) -> list[str]:
        return [r[0] for r in self._r("SELECT DISTINCT carrier FROM segments WHERE state = 'queued'")]

    def record_submitted(self, rows: Sequence[tuple[int, str, str, float, bool]]) -> None:
        """(segment_id, canonical id, raw id, time, possible duplicate) for accepted submits."""
        self._wm("UPDATE segments SET state = 'submitted', carrier_msg_id = ?, raw_msg_id = ?,"
                 " submit_status = 0, submitted_at = ?, possible_duplicate = possible_duplicate OR ?"
                 " WHERE id = ? AND state IN ('dispatched', 'queued')",
                 [(cid, raw, t, int(dup), sid) for sid, cid, raw, t, dup in rows])

    def record_segment_final(self, segment_id: int, status: str, org_code: str, now: float,
                             submit_status: int | None = None, possible_duplicate: bool = False) -> str | None:
        """Mark a segment final; returns its message id, or None if it was already final."""
        rows = self._w("UPDATE segments SET state = 'final', status = ?, org_code = ?, done_at = ?,"
                       " submit_status = COALESCE(?, submit_status), possible_duplicate = possible_duplicate OR ?"
                       " WHERE id = ? AND state != 'final' RETURNING message_id",
                       (status, org_code, now, submit_status, int(possible_duplicate), segment_id)).fetchall()
        return rows[0][0] if rows else None

    def segments_of(self, message_id: str) -> list[tuple[int, str, str | None, str | None]]:
        """(seq, state, status, org_code) per segment."""
        return self._r("SELECT seq, state, status, org_code FROM segments WHERE message_id = ? ORDER BY seq",
                       (message_id,))

    def find_segment(self, carrier: str, canonical_id: str) -> SegmentMatch | None:
        rows = self._r("SELECT id, message_id, state, total FROM segments WHERE carrier = ? AND carrier_msg_id = ?"
                       " ORDER BY id DESC LIMIT 1", (carrier, canonical_id))
        return SegmentMatch(*rows[0]) if rows else None

    def finalise_message(self, message_id: str, status: str, org_code: str, final_seq: int,
                         now: float) -> MessageRecord | None:
        """Make a message final; returns it, or None if it already was."""
        rows = self._w("UPDATE messages SET state = 'final', status = ?, org_code = ?, final_seq = ?,"
                       f" final_at = ? WHERE id = ? AND state != 'final' RETURNING {_MESSAGE_COLUMNS}",
                       (status, org_code, final_seq, now, message_id)).fetchall()
        if not rows:
            return None
        r = rows[0]
        return MessageRecord(*r[:14], bool(r[14]))

    def overdue_segments(self, submitted_before: float, limit: int = 1000) -> list[int]:
        return [r[0] for r in self._r("SELECT id FROM segments WHERE state = 'submitted' AND submitted_at < ?"
                                      " ORDER BY submitted_at LIMIT ?", (submitted_before, limit))]

    def release_held(self, now: float) -> list[str]:
        ids = [r[0] for r in self._r("SELECT id FROM messages WHERE state = 'held' AND release_at <= ?", (now,))]
        if ids:
            self._wm("UPDATE messages SET state = 'queued' WHERE id = ?", [(i,) for i in ids])
            self._wm("UPDATE segments SET state = 'queued' WHERE message_id = ? AND state = 'held'",
                     [(i,) for i in ids])
        return ids

    def next_release_at(self) -> float | None:
        row = self._r("SELECT MIN(release_at) FROM messages WHERE state = 'held'")
        return row[0][0] if row else None

    # -- receipts -----------------------------------------------------------------

    def insert_raw_receipt(self, carrier: str, canonical_id: str, receipt_json: str, now: float,
                           segment_id: int | None, outcome: str) -> int:
        cur = self._w("INSERT INTO receipts_raw (carrier, received_at, canonical_id, receipt, segment_id, outcome)"
                      " VALUES (?,?,?,?,?,?)", (carrier, now, canonical_id, receipt_json, segment_id, outcome))
        return int(cur.lastrowid)

    def unmatched_receipts(self, carrier: str, canonical_id: str) -> list[tuple[int, str]]:
        return self._r("SELECT id, receipt FROM receipts_raw WHERE carrier = ? AND canonical_id = ?"
                       " AND segment_id IS NULL ORDER BY id", (carrier, canonical_id))

    def all_unmatched_receipt_ids(self) -> list[tuple[str, str]]:
        return self._r("SELECT carrier, canonical_id FROM receipts_raw WHERE segment_id IS NULL")

    def mark_receipt_matched(self, receipt_id: int, segment_id: int, outcome: str) -> None:
        self._w("UPDATE receipts_raw SET segment_id = ?, outcome = ? WHERE id = ?", (segment_id, outcome, receipt_id))

    def raw_receipts(self, *, since: float | None, until: float | None, unmatched_only: bool,
                     carrier: str | None, limit: int = 1_000_000) -> list[tuple[int, str, str, float]]:
        """(id, carrier, receipt JSON, received_at) for the replay tool."""
        where, params = _time_range("received_at", since, until)
        if unmatched_only:
            where.append("segment_id IS NULL")
        if carrier:
            where.append("carrier = ?")
            params.append(carrier)
        return self._r(f"SELECT id, carrier, receipt, received_at FROM receipts_raw WHERE {' AND '.join(where)}"
                       " ORDER BY id LIMIT ?", (*params, limit))

    # -- outbox -------------------------------------------------------------------

    def queue_push(self, kind: str, ref_id: str, url: str, payload: str, now: float) -> int | None:
        """Queue a push; a report or uplink is queued at most once per ref_id."""
        cur = self._w("INSERT OR IGNORE INTO outbox (kind, ref_id, url, payload, state, created_at, next_attempt_at)"
                      " VALUES (?,?,?,?, 'pending', ?, ?)", (kind, ref_id, url, payload, now, now))
        return int(cur.lastrowid) if cur.rowcount else None

    def due_pushes(self, now: float, limit: int, exclude: Iterable[int] = ()) -> list[OutboxItem]:
        excluded = set(exclude)
        rows = self._r("SELECT id, kind, ref_id, url, payload, attempts, created_at, next_attempt_at FROM outbox"
                       " WHERE state = 'pending' AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?",
                       (now, limit + len(excluded)))
        return [OutboxItem(*r) for r in rows if r[0] not in excluded][:limit]

    def queue_replay(self, message_id: str, url: str, payload: str, now: float) -> int:
        """An operator's re-push of a report: a new outbox row, same payload."""
        cur = self._w("INSERT INTO outbox (kind, ref_id, url, payload, state, created_at, next_attempt_at)"
                      " VALUES ('replay', ?, ?, ?, 'pending', ?, ?)", (message_id, url, payload, now, now))
        return int(cur.lastrowid)

    def pending_replay(self, message_id: str) -> bool:
        return bool(self._r("SELECT 1 FROM outbox WHERE kind = 'replay' AND ref_id = ? AND state = 'pending'",
                            (message_id,)))

    def push_states(self, outbox_ids: Sequence[int]) -> dict[str, int]:
        if not outbox_ids:
            return {}
        rows = self._r(f"SELECT state, COUNT(*) FROM outbox WHERE id IN ({','.join('?' * len(outbox_ids))})"
                       " GROUP BY state", list(outbox_ids))
        return dict(rows)

    def pending_push_count(self) -> int:
        return self._r("SELECT COUNT(*) FROM outbox WHERE state = 'pending'")[0][0]

    def next_push_at(self) -> float | None:
        row = self._r("SELECT MIN(next_attempt_at) FROM outbox WHERE state = 'pending'")
        return row[0][0] if row else None

    def mark_pushed(self, item: OutboxItem, now: float) -> None:
        self._w("UPDATE outbox SET state = 'acked', acked_at = ?, attempts = attempts + 1 WHERE id = ?",
                (now, item.id))
        if item.kind == "report":
            self._w("UPDATE messages SET reported = 1 WHERE id = ?", (item.ref_id,))

    def mark_push_failed(self, item: OutboxItem, next_at: float, error: str) -> None:
        self._w("UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ? WHERE id = ?",
                (next_at, error[:500], item.id))

    def mark_push_dead(self, item: OutboxItem, error: str) -> None:
        self._w("UPDATE outbox SET state = 'dead', attempts = attempts + 1, last_error = ? WHERE id = ?",
                (error[:500], item.id))

    def outbox_counts(self) -> dict[str, int]:
        return {f"{k}:{s}": n for k, s, n in self._r("SELECT kind, state, COUNT(*) FROM outbox GROUP BY kind, state")}

    def dead_pushes(self, limit: int = 100) -> list[dict[str, Any]]:
        return list(self.db.query("SELECT id, kind, ref_id, url, attempts, created_at, last_error FROM outbox"
                                  " WHERE state = 'dead' ORDER BY id DESC LIMIT ?", (limit,)))

    # -- MO -----------------------------------------------------------------------

    def insert_mo(self, mo: NewMo) -> None:
        self._w("INSERT INTO mo (id, carrier, source, destination, channel, app_id, body, created_at, incomplete,"
                " unsubscribe, downlink_id) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (mo.id, mo.carrier, mo.source, mo.destination, mo.channel, mo.app_id, mo.body, mo.created_at,
                 int(mo.incomplete), int(mo.unsubscribe), mo.downlink_id))

    def add_mo_part(self, key: str, seq: int, total: int, text: str, now: float, carrier: str, source: str,
                    destination: str) -> None:
        self._w("INSERT OR REPLACE INTO mo_parts (key, seq, total, text, received_at, carrier, source, destination)"
                " VALUES (?,?,?,?,?,?,?,?)", (key, seq, total, text, now, carrier, source, destination))

    def mo_parts(self, key: str) -> list[tuple[int, int, str, float, str, str, str]]:
        return self._r("SELECT seq, total, text, received_at, carrier, source, destination FROM mo_parts"
                       " WHERE key = ? ORDER BY seq", (key,))

    def delete_mo_parts(self, key: str) -> None:
        self._w("DELETE FROM mo_parts WHERE key = ?", (key,))

    def stale_mo_keys(self, received_before: float) -> list[str]:
        return [r[0] for r in self._r("SELECT key FROM mo_parts GROUP BY key HAVING MIN(received_at) < ?",
                                      (received_before,))]

    def recent_downlinks(self, channel: str, recipient: str, since: float) -> list[str]:
        return [r[0] for r in self._r("SELECT id FROM messages WHERE channel = ? AND recipient = ?"
                                      " AND created_at > ? ORDER BY created_at DESC LIMIT 2",
                                      (channel, recipient, since))]

    def mo_counts(self) -> dict[str, int]:
        rows = self._r("SELECT COUNT(*), SUM(channel IS NULL), SUM(unsubscribe), SUM(incomplete) FROM mo")
        total, unknown, unsub, incomplete = rows[0]
        return {"total": total or 0, "unknown_channel": unknown or 0, "unsubscribe": unsub or 0,
                "incomplete": incomplete or 0}

    def list_mo(self, limit: int = 100) -> list[dict[str, Any]]:
        return list(self.db.query("SELECT * FROM mo ORDER BY created_at DESC LIMIT ?", (limit,)))

    # -- reads for the API and tools ----------------------------------------------

    def get_message(self, message_id: str) -> MessageRecord | None:
        rows = self._r(f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = ?", (message_id,))
        if not rows:
            return None
        r = rows[0]
        return MessageRecord(*r[:14], bool(r[14]))

    def segment_details(self, message_id: str) -> list[SegmentDetail]:
        rows = self._r("SELECT seq, state, status, org_code, carrier_msg_id, raw_msg_id, submit_status,"
                       " submitted_at, done_at, possible_duplicate FROM segments WHERE message_id = ? ORDER BY seq",
                       (message_id,))
        return [SegmentDetail(*r[:9], bool(r[9])) for r in rows]

    def message_counts(self) -> dict[str, int]:
        return {s: n for s, n in self._r("SELECT state, COUNT(*) FROM messages GROUP BY state")}

    def segment_counts(self) -> dict[str, int]:
        return {s: n for s, n in self._r("SELECT state, COUNT(*) FROM segments GROUP BY state")}

    def unmatched_receipt_count(self) -> int:
        return self._r("SELECT COUNT(*) FROM receipts_raw WHERE segment_id IS NULL")[0][0]

    def export_rows(self, since: float | None, until: float | None) -> Iterable[dict[str, Any]]:
        where, params = _time_range("m.created_at", since, until)
        return self.db.query(
            "SELECT m.id AS message_id, m.recipient, m.carrier, m.channel, m.total AS segments,"
            " (SELECT MIN(submitted_at) FROM segments s WHERE s.message_id = m.id) AS submit_time,"
            " m.created_at, m.state, m.status, m.org_code,"
            " COALESCE((SELECT state FROM outbox o WHERE o.kind = 'report' AND o.ref_id = m.id), 'none')"
            " AS report_state FROM messages m"
            f" WHERE {' AND '.join(where)} ORDER BY m.created_at, m.id", params)

    def report_candidates(self, *, since: float | None, until: float | None, statuses: Sequence[str],
                          channel: str | None, recipient: str | None,
                          ids: Sequence[str]) -> list[MessageRecord]:
        where, params = _time_range("created_at", since, until)
        where.insert(0, "state = 'final'")
        if statuses:
            where.append(f"status IN ({','.join('?' * len(statuses))})")
            params.extend(statuses)
        if channel:
            where.append("channel = ?")
            params.append(channel)
        if recipient:
            where.append("recipient = ?")
            params.append(recipient)
        if ids:
            where.append(f"id IN ({','.join('?' * len(ids))})")
            params.extend(ids)
        rows = self._r(f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE {' AND '.join(where)} ORDER BY created_at",
                       params)
        return [MessageRecord(*r[:14], bool(r[14])) for r in rows]

    def report_payload(self, message_id: str) -> tuple[str, str] | None:
        rows = self._r("SELECT url, payload FROM outbox WHERE kind = 'report' AND ref_id = ?", (message_id,))
        return rows[0] if rows else None

    # -- outbox hardening (issue 14; the pusher's one addition) --------------------

    def defer_push(self, item: OutboxItem, next_at: float) -> None:
        """Move a pending row's next attempt without counting an attempt.

        The pusher parks rows it cannot hold in memory: their receiver's circuit is open
        (until its next probe) or its queue is full (until it drains).
        """
        self._w("UPDATE outbox SET next_attempt_at = ? WHERE id = ? AND state = 'pending'",
                (next_at, item.id))
