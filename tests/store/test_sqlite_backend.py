"""What only the embedded backend has: the one-process lock and a bounded WAL."""

from __future__ import annotations

import os
from pathlib import Path

from twisted.internet.task import Clock

from bridge.models import NewMessage, NewSegment
from bridge.store import result_of
from bridge.store.sqlite import WAL_SIZE_LIMIT, lock_sqlite_store, open_sqlite


class TestLock:
    def test_one_holder_per_database_file(self, tmp_path: Path) -> None:
        """The lock is exclusive and released with its holder."""
        held = lock_sqlite_store(tmp_path / "s.db")
        assert held is not None and lock_sqlite_store(tmp_path / "s.db") is None
        held.close()
        assert lock_sqlite_store(tmp_path / "s.db") is not None

    def test_other_spellings_of_the_same_database_are_refused(self, tmp_path: Path) -> None:
        """A symlink, a relative path with .. and a hard link all name the locked file."""
        (tmp_path / "var").mkdir()
        real = tmp_path / "var" / "bridge.db"
        held = lock_sqlite_store(real)
        assert held is not None
        (tmp_path / "link.db").symlink_to(real)
        os.link(real, tmp_path / "hard.db")
        for spelling in (tmp_path / "link.db", tmp_path / "var" / ".." / "var" / "bridge.db", tmp_path / "hard.db"):
            assert lock_sqlite_store(spelling) is None, spelling
        held.close()


class TestWal:
    def test_wal_is_cut_back_after_a_checkpoint(self, tmp_path: Path) -> None:
        """However large the WAL grew while checkpoints lagged, it shrinks to the limit once one runs."""
        path = tmp_path / "s.db"
        store, executor = open_sqlite(path, clock=Clock(), commit_interval_s=0)
        executor.db.execute("PRAGMA wal_autocheckpoint = 0")   # as if the checkpoint thread were stalled
        body = os.urandom(140)
        for batch in range(40):
            result_of(store.messages.insert([
                NewMessage(id=f"m{batch}-{i}", app_id="a", channel="1069", recipient="+8613800000000",
                           carrier="cmcc", klass="otp", text="t" * 300, content_hash="h", status_callback="",
                           extend="", created_at=1.0, state="queued", status=None, org_code=None,
                           release_at=None, segments=(NewSegment(1, 1, body, 8, 0, None, False),), counted=True)
                for i in range(200)]))
            result_of(store.flush())
        wal = Path(f"{path}-wal")
        assert wal.stat().st_size > 2 * WAL_SIZE_LIMIT
        executor.checkpoint()
        result_of(store.blacklist.add("1069", "+8613800000009", 2.0, None))   # the next write resets the WAL
        result_of(store.flush())
        assert wal.stat().st_size <= WAL_SIZE_LIMIT
        result_of(store.close())
