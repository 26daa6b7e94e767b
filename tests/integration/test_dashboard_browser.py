"""The dashboard in a real browser (issue 17, item 3): Debian's chromium, driven by Playwright,
against a running Fleetward (projector, watchdog, API). Signed in with a viewer token, the page
shows an agent go offline and its escalation appear, without reloading; the screenshot is kept
under the test's tmp folder (its path is printed).

Chromium comes from Debian (``make test`` installs it: ``make chromium``); Playwright never
downloads a browser here. Without it the test fails and says why: it is never skipped."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest
from playwright.async_api import async_playwright

from fleetward.schemas.events import Heartbeat
from fleetward.services.jetstream.publish import publish, publish_many
from fleetward.services.runtime.connect import Runtime
from tests.helpers import envelope
from tests.integration.api_harness import INTERVAL, running_api
from tests.integration.test_watchdog import register

CHROMIUM = os.environ.get("FLEETWARD_CHROMIUM", "/usr/bin/chromium")
WAIT_MS = 30_000


async def beat(rt: Runtime, agents: set[str]) -> None:
    """Heartbeats of ``agents`` (those still in it) every third of an interval, until cancelled."""
    while True:
        for agent in sorted(agents):
            await publish(rt.js, Heartbeat(**envelope(agent), agent=agent, status="busy"))
        await anyio.sleep(INTERVAL / 3)


async def test_the_dashboard_shows_an_agent_go_offline_and_its_escalation_without_reload(
    rt: Runtime, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert os.access(CHROMIUM, os.X_OK), (
        f"no chromium at {CHROMIUM}: `make chromium` installs Debian's (apt-get install chromium)"
    )
    await publish_many(rt.js, [register("web-quiet"), register("web-busy")])
    alive = {"web-quiet", "web-busy"}
    shot = tmp_path / "dashboard.png"
    problems: list[str] = []  # the page's errors and console lines, shown if it fails
    async with running_api(rt) as api, anyio.create_task_group() as tg:
        tg.start_soon(beat, rt, alive)
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM)
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 900})
                page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
                page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}"))
                await page.goto(f"{api.base}/login#token={api.token}")
                await page.wait_for_url(f"{api.base}/", timeout=WAIT_MS)
                quiet = page.locator('#agents tr[data-agent-id="web-quiet"]')
                await quiet.locator("td.s-active").wait_for(timeout=WAIT_MS)
                await page.locator("#live.on").wait_for(timeout=WAIT_MS)
                assert await page.locator("#whoami").inner_text() == "user:viewer (viewer)"
                await page.evaluate("window.notReloaded = true")

                alive.discard("web-quiet")  # it falls silent: the watchdog takes it offline
                await quiet.locator("td.s-offline").wait_for(timeout=WAIT_MS)
                escalation = page.locator("#escalations tbody tr", has_text="web-quiet")
                await escalation.locator("td", has_text="heartbeat_missed").wait_for(
                    timeout=WAIT_MS
                )
                await page.locator("#escalations-by-tier-critical").wait_for(timeout=WAIT_MS)
                busy = page.locator('#agents tr[data-agent-id="web-busy"] td.s-active')
                assert await busy.count() == 1
                assert await page.evaluate("window.notReloaded === true"), "the page reloaded"
                await page.screenshot(path=str(shot), full_page=True)
            except Exception:
                await page.screenshot(path=str(shot), full_page=True)
                print(f"the page at the failure: {shot}\n" + "\n".join(problems))
                print(await page.content())
                raise
            finally:
                await browser.close()
        tg.cancel_scope.cancel()
    with capsys.disabled():
        print(f"\ndashboard screenshot: {shot}")
    assert (await anyio.Path(shot).stat()).st_size > 0
