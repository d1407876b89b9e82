"""The browser tests' gate: skipped loudly without Chromium locally, a failure in CI."""

from __future__ import annotations

import pytest

from tests import browser


def test_missing_chromium_skips_locally_with_the_loud_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(browser, "CHROMIUM", "/nonexistent/chromium")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception) as info:
        browser.require_chromium()
    assert "BROWSER TESTS NOT RUN" in str(info.value)


def test_missing_chromium_fails_when_ci_is_true(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(browser, "CHROMIUM", "/nonexistent/chromium")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception) as info:
        browser.require_chromium()
    assert "CI=true" in str(info.value)
