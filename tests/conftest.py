"""Fixtures shared by every suite: the store backends under test.

``store_backend`` runs a test once on the embedded SQLite store and once on a real
PostgreSQL server (a throwaway cluster started once per session, a fresh database per
test). No mocks: both are the real thing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge.config import StoreConfig
from tests.pgserver import PgServer

BACKENDS = ("sqlite", "postgres")


@dataclass(frozen=True)
class Backend:
    """How a test opens the store: ``config`` for a daemon, ``url`` None on SQLite."""

    name: str
    config: StoreConfig

    @property
    def url(self) -> str | None:
        return self.config.url


@pytest.fixture(scope="session", name="pg_server")
def _pg_server() -> Iterator[PgServer]:
    server = PgServer().start()
    yield server
    server.stop()


@pytest.fixture(params=BACKENDS, name="store_backend")
def _store_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite", StoreConfig(path=tmp_path / "bridge.db"))
    server: PgServer = request.getfixturevalue("pg_server")
    return Backend("postgres", StoreConfig(url=server.new_database()))
