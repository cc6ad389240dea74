"""The schema, written once, and its migrations, for both backends.

Each migration is a named list of statements in SQLite's spelling; the PostgreSQL
backend translates the few column types that differ. Names are recorded per database,
so a migration runs once whatever backend or process applies it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["MIGRATIONS", "Migration", "postgres_ddl"]


@dataclass(frozen=True, slots=True)
class Migration:
    name: str
    statements: tuple[str, ...]


_INITIAL = (
    """CREATE TABLE messages (
        id TEXT PRIMARY KEY, app_id TEXT NOT NULL, channel TEXT NOT NULL,
        recipient TEXT NOT NULL, carrier TEXT, klass TEXT NOT NULL, text TEXT NOT NULL,
        content_hash TEXT NOT NULL, status_callback TEXT NOT NULL, extend TEXT NOT NULL,
        created_at REAL NOT NULL, state TEXT NOT NULL, status TEXT, org_code TEXT,
        release_at REAL, total INTEGER NOT NULL, final_at REAL, final_seq INTEGER,
        reported INTEGER NOT NULL DEFAULT 0, counted INTEGER NOT NULL DEFAULT 0)""",
    "CREATE INDEX messages_recipient ON messages(recipient, created_at) WHERE counted = 1",
    "CREATE INDEX messages_held ON messages(release_at) WHERE state = 'held'",
    "CREATE INDEX messages_created ON messages(created_at)",
    "CREATE INDEX messages_channel_recipient ON messages(channel, recipient, created_at)",
    """CREATE TABLE segments (
        id INTEGER PRIMARY KEY, message_id TEXT NOT NULL, carrier TEXT NOT NULL,
        seq INTEGER NOT NULL, total INTEGER NOT NULL, source_addr TEXT NOT NULL,
        destination_addr TEXT NOT NULL, short_message BLOB NOT NULL,
        data_coding INTEGER NOT NULL, esm_class INTEGER NOT NULL, ref INTEGER,
        sar INTEGER NOT NULL, state TEXT NOT NULL, possible_duplicate INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0, carrier_msg_id TEXT, raw_msg_id TEXT,
        submit_status INTEGER, submitted_at REAL, status TEXT, org_code TEXT, done_at REAL)""",
    "CREATE INDEX segments_message ON segments(message_id, seq)",
    "CREATE INDEX segments_queued ON segments(carrier, id) WHERE state = 'queued'",
    "CREATE INDEX segments_dispatched ON segments(id) WHERE state = 'dispatched'",
    "CREATE INDEX segments_carrier_id ON segments(carrier, carrier_msg_id)",
    "CREATE INDEX segments_waiting ON segments(submitted_at) WHERE state = 'submitted'",
    """CREATE TABLE receipts_raw (
        id INTEGER PRIMARY KEY, carrier TEXT NOT NULL, received_at REAL NOT NULL,
        canonical_id TEXT NOT NULL, receipt TEXT NOT NULL, segment_id INTEGER,
        outcome TEXT NOT NULL)""",
    "CREATE INDEX receipts_unmatched ON receipts_raw(carrier, canonical_id) WHERE segment_id IS NULL",
    "CREATE INDEX receipts_received ON receipts_raw(received_at)",
    """CREATE TABLE outbox (
        id INTEGER PRIMARY KEY, kind TEXT NOT NULL, ref_id TEXT NOT NULL, url TEXT NOT NULL,
        payload TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL, next_attempt_at REAL NOT NULL, acked_at REAL,
        last_error TEXT)""",
    "CREATE UNIQUE INDEX outbox_once ON outbox(kind, ref_id) WHERE kind IN ('report', 'uplink')",
    "CREATE INDEX outbox_due ON outbox(next_attempt_at) WHERE state = 'pending'",
    """CREATE TABLE blacklist (
        channel TEXT NOT NULL, number TEXT NOT NULL, created_at REAL NOT NULL,
        mo_id TEXT, PRIMARY KEY (channel, number))""",
    """CREATE TABLE mo (
        id TEXT PRIMARY KEY, carrier TEXT NOT NULL, source TEXT NOT NULL,
        destination TEXT NOT NULL, channel TEXT, app_id TEXT, body TEXT NOT NULL,
        created_at REAL NOT NULL, incomplete INTEGER NOT NULL, unsubscribe INTEGER NOT NULL,
        downlink_id TEXT)""",
    "CREATE INDEX mo_created ON mo(created_at)",
    """CREATE TABLE mo_parts (
        key TEXT NOT NULL, seq INTEGER NOT NULL, total INTEGER NOT NULL, text TEXT NOT NULL,
        received_at REAL NOT NULL, carrier TEXT NOT NULL, source TEXT NOT NULL,
        destination TEXT NOT NULL, PRIMARY KEY (key, seq))""",
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration("m001_initial", _INITIAL),
    # Retention deletes acknowledged pushes by age.
    Migration("m002_outbox_created", ("CREATE INDEX outbox_created ON outbox(created_at)",)),
    # The backlog gauge counts held segments without a scan.
    Migration("m003_segments_held", ("CREATE INDEX segments_held ON segments(id) WHERE state = 'held'",)),
    # The outbox gauge counts pending and dead rows per kind without scanning acknowledged ones.
    Migration("m004_outbox_open_by_kind", (
        "CREATE INDEX outbox_pending_kind ON outbox(kind) WHERE state = 'pending'",
        "CREATE INDEX outbox_dead_kind ON outbox(kind) WHERE state = 'dead'",
    )),
    # Cluster membership: one row per running instance, its heartbeat and what it reports
    # (API address, its binds' states); and each carrier's binds as cluster-wide leased slots.
    Migration("m005_cluster", (
        """CREATE TABLE nodes (
            name TEXT PRIMARY KEY, started_at REAL NOT NULL, heartbeat_at REAL NOT NULL,
            api TEXT NOT NULL DEFAULT '', binds TEXT NOT NULL DEFAULT '[]')""",
        """CREATE TABLE bind_slots (
            carrier TEXT NOT NULL, slot INTEGER NOT NULL, node TEXT,
            lease_until REAL NOT NULL DEFAULT 0, PRIMARY KEY (carrier, slot))""",
    )),
    # Which member took a segment for its binds: a dead member's are requeued by the leader.
    Migration("m006_segments_dispatched_by", ("ALTER TABLE segments ADD COLUMN dispatched_by TEXT",)),
    # Which member pushes a row: no two push it at once; a dead member's rows are taken over.
    Migration("m007_outbox_claimed_by", ("ALTER TABLE outbox ADD COLUMN claimed_by TEXT",)),
    # Receipts look segments up by carrier id, which a segment has only once submitted: the
    # index leaves out the NULLs (one entry fewer to write per segment, none to move).
    Migration("m008_segments_carrier_id_partial", (
        "DROP INDEX segments_carrier_id",
        "CREATE INDEX segments_carrier_id ON segments(carrier, carrier_msg_id) WHERE carrier_msg_id IS NOT NULL",
    )),
)

_PG_TYPES = (
    (re.compile(r"\bid INTEGER PRIMARY KEY\b"), "id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
    (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),
    (re.compile(r"\bBLOB\b"), "BYTEA"),
    (re.compile(r"\bsegment_id INTEGER\b"), "segment_id BIGINT"),
)


def postgres_ddl(statement: str) -> str:
    for pattern, replacement in _PG_TYPES:
        statement = pattern.sub(replacement, statement)
    return statement
