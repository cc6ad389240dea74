"""A daemon owns its store: tools see it running, and on SQLite a second daemon is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import StoreConfig
from bridge.store import StoreInUseError, StoreMissingError, lock_store, open_store, result_of
from tests.conftest import Backend


def test_tools_see_a_daemon_and_none_after_it(store_backend: Backend) -> None:
    daemon = open_store(store_backend.config, inline=True, daemon=True)
    assert lock_store(store_backend.config) is None          # a tool must hand over to the daemon
    result_of(daemon.close())
    held = lock_store(store_backend.config)
    assert held is not None                                   # no daemon: the tool may push itself
    held.close()


def test_a_second_embedded_daemon_is_refused(tmp_path: Path) -> None:
    """(A PostgreSQL store is shared by every daemon of a cluster.)"""
    config = StoreConfig(path=tmp_path / "bridge.db")
    first = open_store(config, inline=True, daemon=True)
    with pytest.raises(StoreInUseError, match="in use by another smpp-bridge process"):
        open_store(config, inline=True, daemon=True)
    result_of(first.close())
    result_of(open_store(config, inline=True, daemon=True).close())


def test_a_tool_does_not_create_a_missing_embedded_store(tmp_path: Path) -> None:
    config = StoreConfig(path=tmp_path / "bridge.db")
    with pytest.raises(StoreMissingError, match="no such store"):
        open_store(config, inline=True, create=False)
    assert not config.path.exists()
