"""Browser test support: Debian's Chromium driven by Playwright (async API), one server per module.

Without /usr/bin/chromium the browser tests are skipped locally, loudly (see the terminal
summary hook in conftest.py); with CI=true a missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--headless=new"]
SKIP_REASON = (f"BROWSER TESTS NOT RUN: no Chromium at {CHROMIUM} "
               "(apt-get install chromium; CI=true makes this a failure)")
SHOTS = Path(os.environ.get("WEB_SCREENSHOTS", Path(tempfile.gettempdir()) / "chat-web-screenshots"))


def require_chromium() -> str:
    """The browser's path, or skip (locally) / fail (CI) when it is missing."""
    if Path(CHROMIUM).exists() or shutil.which(CHROMIUM):
        return CHROMIUM
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and no Chromium at {CHROMIUM}: the browser tests must run in CI", pytrace=False)
    pytest.skip(SKIP_REASON)


async def launch() -> tuple[Any, Any]:
    """(playwright, browser) for a module; stop both with close()."""
    path = require_chromium()
    from playwright.async_api import async_playwright

    pw = await async_playwright().start()
    browser = await pw.chromium.launch(executable_path=path, headless=True, args=LAUNCH_ARGS)
    return pw, browser


def shot_path(name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    return SHOTS / f"{name}.png"
