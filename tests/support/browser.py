"""Headless Chromium (Debian's) for the page tests, driven by Playwright, and where their
screenshots go. Page test modules set `pytestmark = needs_chromium` and take the `chromium`
fixture (tests/conftest.py)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium"
                                        if Path("/usr/bin/chromium").exists() else None)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium; "
                             ".ci/run installs it)")

# The flags this machine's closed network needs (no background calls to Google's hosts).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
# Chromium as a browser that blocks third-party cookies (Chrome's own test switch for it): a
# cross-site frame then gets no cookie at all, whatever its SameSite.
NO_THIRD_PARTY_COOKIES = ["--test-third-party-cookie-phaseout"]
# Screenshots are kept as test artefacts, at the repository root.
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def launch(extra_args: list[str] | None = None) -> Iterator[Any]:
    """A browser for one test (the `chromium` fixture), with `extra_args` switches."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                             args=[*CHROMIUM_ARGS, *(extra_args or [])])
        yield browser
        browser.close()
