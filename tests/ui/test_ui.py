"""The web UI end to end: a real proxy (with an admin token) and a real handler app, driven in headless
Chromium through Playwright.

It enters the admin token when the UI asks for it, finds real invocations in the list, reads a timeline
(entry kinds and names, a call's link to its callee), cancels a sleeping invocation with the button and its
confirm step, and sees it end as cancelled both in the UI and through the admin API. The list and a
timeline are saved as screenshots (see ``tests.ui.browser``)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.processes.cluster import Cluster, cluster, wait_until

from .browser import chromium_page, require_browser, screenshot

if TYPE_CHECKING:
    from playwright.sync_api import ConsoleMessage, Page

pytestmark = [pytest.mark.processes, pytest.mark.browser]

TOKEN = "ui-test-token"


class Admin:
    """The admin API, with the token."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.headers = {"Authorization": f"Bearer {TOKEN}"}

    def invocation(self, invocation_id: str) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/invocations/{invocation_id}", headers=self.headers, timeout=10)
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found

    def status(self, invocation_id: str) -> str:
        status: str = self.invocation(invocation_id)["status"]
        return status


def _send(c: Cluster, target: str, body: object) -> str:
    response = httpx.post(f"{c.ingress}/{target}/send", json=body, timeout=10)
    assert response.status_code in (200, 202), response.text
    invocation_id: str = response.json()["invocationId"]
    return invocation_id


@pytest.fixture
def proxy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    require_browser()
    # The proxy requires the token on its admin API; the CLI that registers the app sends it too.
    monkeypatch.setenv("DURABLE_PROXY_ADMIN_TOKEN", TOKEN)
    with cluster(tmp_path, instances=1, app="tests.processes.flows_app:app", expect_service="Sleeper", prefix="") as c:
        yield c


def _timeline(page: Page) -> list[tuple[str, str]]:
    """(kind, name) of each journal entry on the timeline, in order."""
    pairs: list[list[str]] = page.eval_on_selector_all(
        "#timeline li[data-kind]",
        "items => items.map(li => [li.dataset.kind, li.querySelector('.ev-name')?.textContent ?? ''])",
    )
    return [(kind, name) for kind, name in pairs]


def test_list_timeline_and_cancel_in_the_browser(proxy: Cluster, tmp_path: Path) -> None:
    c = proxy
    admin = Admin(c.admin)
    # A step, a sleep long enough to suspend (attempt 1 ends there, attempt 2 runs after it), a step.
    nap = _send(c, "Sleeper/nap", 1.2)
    chain = _send(c, "Chain/a", 1)  # a step and a call (Chain/b, which calls Chain/c): completes
    long = _send(c, "Sleeper/nap", 3600.0)  # sleeps an hour: cancelled from the UI
    for invocation_id in (nap, chain):
        attached = httpx.get(f"{c.ingress}/restate/attach/{invocation_id}", timeout=30)
        assert attached.status_code == 200, attached.text
    wait_until(lambda: admin.status(long) == "suspended", "the long nap to suspend in its sleep", 15)
    call_entry = admin.invocation(chain)["journal"][1]
    assert call_entry["kind"] == "call"

    problems: list[str] = []
    with chromium_page() as page:

        def on_console(message: ConsoleMessage) -> None:
            # The 401s before the token is entered are expected: the browser logs them itself.
            if message.type == "error" and "401" not in message.text:
                problems.append(f"console: {message.text}")

        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        page.on("console", on_console)

        # The UI is served on the admin port without the token; the API asks for it, so the UI does,
        # and again when the token entered is wrong.
        page.goto(f"{c.admin}/ui/")
        dialog = page.locator("#token-dialog")
        dialog.wait_for(state="visible")
        page.fill("#token-input", "not-the-token")
        page.click("#token-dialog button[type=submit]")
        page.locator("#token-error", has_text="not accepted").wait_for()
        page.fill("#token-input", TOKEN)
        page.click("#token-dialog button[type=submit]")
        dialog.wait_for(state="hidden")
        assert page.evaluate("sessionStorage.getItem('durable-proxy.admin-token')") == TOKEN

        # ------------------------------------------------------------------------------ the list
        for invocation_id in (nap, chain, long):
            page.locator(f'tr[data-id="{invocation_id}"]').wait_for()
        nap_row = page.locator(f'tr[data-id="{nap}"]')
        assert nap_row.locator(".badge").first.inner_text() == "completed"
        assert "Sleeper" in nap_row.inner_text() and "nap" in nap_row.inner_text()
        assert page.locator(f'tr[data-id="{long}"] .badge').first.inner_text() == "suspended"
        # Chain/a, Chain/b, Chain/c, and the two naps.
        assert page.locator("#invocation-rows tr").count() == 5
        page.locator("#live[data-state=live]").wait_for()
        screenshot(page, "ui-list.png", tmp_path)

        # Live refreshes patch the table in place: an unchanged row is the same element afterwards.
        page.eval_on_selector(f'tr[data-id="{nap}"]', "row => { row.kept = true; }")
        updated = page.inner_text("#live")
        page.wait_for_function("text => document.querySelector('#live').textContent !== text", arg=updated)
        assert page.eval_on_selector(f'tr[data-id="{nap}"]', "row => row.kept === true"), "the row was rebuilt"

        # A filter narrows the list (through the admin API's filters) and lives in the URL.
        page.select_option("#f-service", "Sleeper")
        page.wait_for_function("document.querySelectorAll('#invocation-rows tr').length === 2")
        assert "service=Sleeper" in page.url
        page.click("text=Clear")
        page.wait_for_function("document.querySelectorAll('#invocation-rows tr').length === 5")

        # -------------------------------------------------------------------------- a timeline
        nap_row.locator("a").first.click()
        page.wait_for_url(re.compile(f"#/invocations/{nap}$"))
        page.locator("#timeline li.ev-end").wait_for()
        assert _timeline(page) == [("run", "before"), ("sleep", ""), ("run", "after")]
        sleep = page.locator("#timeline li[data-kind=sleep]")
        assert "sleeps" in sleep.inner_text() and "done after" in sleep.inner_text()
        assert page.locator("#timeline li[data-kind=run] .ev-kind").first.inner_text().lower() == "step"
        assert page.locator("#inv-status .badge").first.inner_text() == "completed"
        # The attempts sit between the entries: the first suspended in the sleep, the second completed.
        attempts = page.locator("#timeline li.ev-attempt-end .outcome").all_inner_texts()
        assert attempts == ["suspended", "completed"], attempts
        screenshot(page, "ui-timeline.png", tmp_path)

        # A call links to its callee's page.
        page.goto(f"{c.admin}/ui/#/invocations/{chain}")
        page.locator("#timeline li.ev-end").wait_for()
        assert _timeline(page) == [("run", "a-step"), ("call", "")]
        page.locator("#timeline li[data-kind=call] a.callee").click()
        page.wait_for_url(re.compile(r"#/invocations/inv_\w+$"))
        callee_id = page.url.rsplit("/", 1)[1]
        assert admin.invocation(callee_id)["parent_id"] == chain
        assert callee_id == call_entry.get("callee_id", callee_id)
        page.locator("#inv-title", has_text="b").wait_for()
        assert _timeline(page)[0] == ("run", "b-step")

        # ---------------------------------------------------------------------------- cancel
        page.goto(f"{c.admin}/ui/#/invocations/{long}")
        page.locator("#inv-status .badge[data-status=suspended]").wait_for()
        assert [kind for kind, _ in _timeline(page)] == ["run", "sleep"]
        page.click("button[data-action=cancel]")
        confirm = page.locator("#confirm-dialog")
        confirm.wait_for(state="visible")
        assert "Cancel this invocation?" in confirm.inner_text()
        page.click("#confirm-ok")
        confirm.wait_for(state="hidden")
        # The page refreshes itself: no reload.
        page.locator("#inv-status .badge[data-status=failed]").wait_for()
        page.locator("#inv-status [data-how=cancelled]").wait_for()
        page.locator("#live[data-state=ended]").wait_for()
        assert page.locator("button[data-action=cancel]").count() == 0, "no actions once it has ended"
        ended = admin.invocation(long)
        assert ended["status"] == "failed"
        assert ended["failure"]["message"] == "cancelled"

        # And the list shows it.
        page.click("nav >> text=Invocations")
        page.locator(f'tr[data-id="{long}"] .badge[data-status=failed]').wait_for()

        # ------------------------------------------------------------- services, deployments
        page.click("nav >> text=Services")
        page.locator("#services article", has_text="Sleeper").locator("th", has_text="nap").wait_for()
        assert page.locator("#services article", has_text="Chain").locator("tbody tr").count() == 3
        page.click("nav >> text=Deployments")
        deployment = page.locator("#deployments article").first
        deployment.wait_for()
        assert c.service_uri(0) in deployment.inner_text()
        assert page.locator("#token-dialog").is_hidden(), "the token is asked for once"
    assert not problems, problems
