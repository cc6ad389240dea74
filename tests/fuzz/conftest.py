"""One real daemon (with its embedded simulator) per test module of the HTTP fuzzers.

Starting a daemon costs about a second and the fuzzers send hundreds of requests,
so each module shares one; the fuzzers only add messages, and every check compares
counts before and after its own request.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator

import pytest

from tests.e2e.harness import Bridge, BridgeOptions, Receiver


@pytest.fixture(scope="module", name="receiver")
def _receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module", name="bridge")
def _bridge(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[Bridge]:
    b = Bridge(tmp_path_factory.mktemp("bridge"), receiver, BridgeOptions())
    try:
        yield b.start()
    finally:
        b.close()


@pytest.fixture(scope="module", name="stored")
def _stored(bridge: Bridge) -> Iterator[Callable[[], tuple[int, ...]]]:
    """``stored()`` counts (messages, segments) through a read-only connection.

    Only intake writes these tables; outbox rows also come from receipts arriving in
    the background, so they would make the before/after comparison racy.
    """
    db = sqlite3.connect(f"file:{bridge.tmp / 'bridge.db'}?mode=ro", uri=True, timeout=10)

    def count() -> tuple[int, ...]:
        return tuple(db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                     for t in ("messages", "segments"))

    yield count
    db.close()
