"""The daemon's garbage-collector settings: start-up heap frozen, young passes rarer."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from bridge.daemon import YOUNG_GC_THRESHOLD, _tune_collector


@pytest.fixture
def restored_collector() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


@pytest.mark.usefixtures("restored_collector")
def test_start_up_heap_is_frozen_and_young_passes_are_rarer() -> None:
    gc.unfreeze()
    _, middle, old = gc.get_threshold()
    _tune_collector()
    assert gc.get_freeze_count() > 10_000          # modules, classes, config: out of every pass
    assert gc.get_threshold() == (YOUNG_GC_THRESHOLD, middle, old)
    young_passes = gc.get_stats()[0]["collections"]
    held = [{"id": n} for n in range(YOUNG_GC_THRESHOLD // 4)]   # a burst in flight: 7 passes at 700
    assert gc.get_stats()[0]["collections"] == young_passes
    assert len(held) == YOUNG_GC_THRESHOLD // 4
