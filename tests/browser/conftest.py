"""Fixtures for the browser tests: a real headless Chromium (Debian's ``chromium``) driven
by Playwright, against a real daemon from the end-to-end harness.

Playwright's own browser downloads are never used: the system Chromium is launched by
path. The tests skip, saying why, only when no Chromium executable exists.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.e2e.conftest import _bridge, _e2e_backend, _make_bridge, _receiver  # noqa: F401 (fixtures)

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def chromium_path() -> str | None:
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(name="browser", scope="session")
def _browser() -> Iterator[Browser]:
    path = chromium_path()
    if path is None:
        pytest.skip("no Chromium executable (/usr/bin/chromium); install Debian's chromium (.ci/run does)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(name="page")
def _page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(20_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # Console errors include CSP violations and failed loads; a refused token (401) is expected.
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" and "status of 401" not in m.text
            else None)
    yield page
    context.close()
    assert not errors, f"JavaScript or console errors on the page: {errors}"
