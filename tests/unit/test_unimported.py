"""unimported(): a library's optional extras stay out of the daemon."""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.unimported import unimported


@pytest.fixture
def extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An importable module nobody has imported yet."""
    name = f"optional_extra_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text("VALUE = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_blocked_inside_importable_after(extra: str) -> None:
    with unimported(extra), pytest.raises(ImportError):
        importlib.import_module(extra)
    assert importlib.import_module(extra).VALUE == 42


def test_a_module_already_imported_is_left_alone(extra: str) -> None:
    module = importlib.import_module(extra)
    with unimported(extra):
        assert importlib.import_module(extra) is module
    assert sys.modules[extra] is module


def test_the_daemon_does_not_load_numpy_through_sqlite_utils() -> None:
    pytest.importorskip("numpy")   # installed with the test extras (matplotlib)
    code = ("import sys, bridge.daemon, bridge.store.sqlite, sqlite_utils.db as d; "
            "print('numpy' in sys.modules, d.np is None)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True"]
