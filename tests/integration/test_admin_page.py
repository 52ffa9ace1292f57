"""The admin page in a real headless Chromium, against a real bridge and the COR sandbox."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.browser import chromium, needs_browser
from tests.builders import okta_delivery, okta_event
from tests.integration.harness import ADMIN_TOKEN, FINANCE, Bridge, Sandbox, wait_for

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

pytestmark = [pytest.mark.integration, pytest.mark.browser, needs_browser()]

GHOST = "ghost@acme.example"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    with chromium(tmp_path) as driver:
        yield driver


def _css(browser: WebDriver, selector: str, timeout: float = 10.0):
    """The first element matching `selector`, once it is on the page."""
    from selenium.webdriver.common.by import By

    return wait_for(
        lambda: next(iter(browser.find_elements(By.CSS_SELECTOR, selector)), None),
        timeout=timeout,
        what=f"{selector!r} on {browser.current_url}",
    )


def _log_in(browser: WebDriver, bridge: Bridge) -> None:
    browser.get(f"{bridge.url}/admin")
    _css(browser, "input#token").send_keys(ADMIN_TOKEN)
    _css(browser, "form[action='/admin/login'] button[type=submit]").click()
    _css(browser, "section#health")


def test_replay_a_dead_letter_from_the_admin_page(
    browser: WebDriver, bridge: Bridge, sandbox: Sandbox, tmp_path: Path
) -> None:
    removal = okta_event(
        "group.user_membership.remove", user="ghost", group_id=FINANCE, group_name="finance"
    )
    bridge.deliver(okta_delivery(removal))
    [dead] = bridge.wait_jobs("dead", count=1, cor_user_id=GHOST)
    sandbox.put_user(GHOST, ["WS-FIN", "WS-OPS"])  # the operator fixes the cause in COR

    _log_in(browser, bridge)
    row = _css(browser, f"tr#dead-{dead['id']}")
    assert GHOST in row.text and "ZC001" in row.text and "WS-FIN" in row.text
    assert "Dead letters (1)" in browser.page_source
    browser.save_screenshot(str(tmp_path / "admin-dashboard.png"))

    row.find_element("css selector", "button[name=id]").click()

    flash = _css(browser, "div.flash")
    assert f"Job {dead['id']}: requeued." in flash.text
    calls = sandbox.wait_detached(GHOST, {"WS-FIN"})
    assert calls[-1]["body"] == {"workspaces": ["WS-FIN"], "metadata": {"source": "OKTA"}}
    assert [c["status"] for c in sandbox.detaches(GHOST)] == [400, 200]
    browser.save_screenshot(str(tmp_path / "admin-after-replay.png"))

    search = _css(browser, "input#user-search")
    search.send_keys(GHOST)
    search.submit()
    event = _css(browser, "section#events tbody tr").text
    assert "removed" in event and "finance" in event and "queued" in event
    assert f"queued job {dead['id']}: detach WS-FIN from {GHOST}" in event

    def job_done() -> bool:
        browser.refresh()
        return "done" in _css(browser, f"tr#job-{dead['id']}").text

    wait_for(job_done, what="the replayed job shown as done in the history")
    browser.save_screenshot(str(tmp_path / "admin-history.png"))
    _css(browser, f"tr#job-{dead['id']} a[href='/admin/ui/jobs/{dead['id']}']").click()
    attempts = _css(browser, "section#deliveries").text
    assert "Delivery attempts (2)" in attempts and "ZC001" in attempts
    browser.save_screenshot(str(tmp_path / "admin-job.png"))


def test_a_wrong_token_does_not_open_the_page(
    browser: WebDriver, bridge: Bridge, tmp_path: Path
) -> None:
    browser.get(f"{bridge.url}/admin")
    _css(browser, "input#token").send_keys("not-the-token")
    _css(browser, "form[action='/admin/login'] button[type=submit]").click()
    assert "That is not the admin token." in _css(browser, "p.alert").text
    assert not browser.get_cookies()
    browser.save_screenshot(str(tmp_path / "admin-login-refused.png"))
