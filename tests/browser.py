"""Headless Chromium for browser tests: Debian's chromium and chromedriver, driven by Selenium.

`chromium(tmp_path)` finds the browser and its driver (COR_BRIDGE_CHROMIUM and
COR_BRIDGE_CHROMEDRIVER override the Debian paths), starts a fresh profile, and skips the
test with the reason when either is missing, unless COR_BRIDGE_TEST_REQUIRE_BROWSER=1
(CI sets it), which fails instead. Nothing is ever downloaded: no Selenium Manager.
Install them with `apt-get install chromium chromium-driver`.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

REQUIRE_BROWSER = os.environ.get("COR_BRIDGE_TEST_REQUIRE_BROWSER") == "1"
# Without the networking flags Chromium calls home at start, and this machine's closed
# network refuses it; root needs --no-sandbox.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
)


def _find(env: str, name: str, debian: str) -> str | None:
    given = os.environ.get(env)
    if given:
        return given if os.access(given, os.X_OK) else None
    if os.access(debian, os.X_OK):
        return debian
    return shutil.which(name)


def find_browser() -> tuple[str | None, str | None, str | None]:
    """(chromium, chromedriver, reason): the reason is None when both are usable."""
    if importlib.util.find_spec("selenium") is None:
        return None, None, "the selenium package is not installed (pip install -e '.[dev]')"
    binary = _find("COR_BRIDGE_CHROMIUM", "chromium", "/usr/bin/chromium")
    driver = _find("COR_BRIDGE_CHROMEDRIVER", "chromedriver", "/usr/bin/chromedriver")
    missing = [n for n, p in (("chromium", binary), ("chromedriver", driver)) if p is None]
    if missing:
        reason = (
            f"no {' or '.join(missing)} on this machine; install Debian's packages with "
            "`apt-get install chromium chromium-driver` to run the browser tests"
        )
        return binary, driver, reason
    return binary, driver, None


def needs_browser() -> pytest.MarkDecorator:
    """A mark that skips a test up front (before any process starts) when there is no browser."""
    reason = find_browser()[2]
    return pytest.mark.skipif(reason is not None and not REQUIRE_BROWSER, reason=reason or "")


@contextmanager
def chromium(tmp_path: Path) -> Iterator[WebDriver]:
    """A headless Chromium with an empty profile; skips (or fails in CI) when there is none."""
    binary, driver_path, reason = find_browser()
    if reason is not None:
        if REQUIRE_BROWSER:
            pytest.fail(reason)
        pytest.skip(reason)
    assert binary is not None and driver_path is not None
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    service = Service(driver_path, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
