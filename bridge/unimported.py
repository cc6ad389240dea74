"""Import a library without the optional extras it would pull in if they were installed."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["unimported"]


@contextmanager
def unimported(*names: str) -> Iterator[None]:
    """While the block runs, ``import name`` fails as if ``name`` were not installed.

    A library that probes for an optional package (``try: import numpy``) then goes on
    without it. Afterwards the names are importable again by code that really needs them;
    one already imported is left alone.
    """
    blocked = [name for name in names if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]  # the import system's "not found"
    try:
        yield
    finally:
        for name in blocked:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]
