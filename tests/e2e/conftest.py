"""Fixtures for end-to-end tests: a real HTTP receiver and a daemon factory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Backend
from tests.e2e.harness import Bridge, BridgeOptions, Receiver


@pytest.fixture(name="e2e_backend")
def _e2e_backend(tmp_path: Path) -> Backend | None:
    """SQLite unless a module overrides this with ``store_backend`` (both backends)."""
    return None


@pytest.fixture(name="receiver")
def _receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(name="make_bridge")
def _make_bridge(tmp_path: Path, receiver: Receiver, e2e_backend: Backend | None) -> Iterator[Callable[..., Bridge]]:
    started: list[Bridge] = []

    def make(wait_bound: bool = True, **options: object) -> Bridge:
        if e2e_backend is not None and e2e_backend.url:
            options.setdefault("store_url", e2e_backend.url)
        b = Bridge(tmp_path, receiver, BridgeOptions(**options))  # type: ignore[arg-type]
        started.append(b)
        return b.start(wait_bound=wait_bound)

    yield make
    for b in started:
        b.close()


@pytest.fixture(name="bridge")
def _bridge(make_bridge: Callable[..., Bridge]) -> Bridge:
    return make_bridge()
