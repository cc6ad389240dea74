"""Shared fixtures for the simulator tests."""

from __future__ import annotations

import pytest
import structlog


@pytest.fixture(autouse=True)
def _reset_structlog():
    """No test leaves a structlog configuration behind for the next one."""
    yield
    structlog.reset_defaults()
