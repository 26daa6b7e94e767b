"""The dashboard in a real browser (issue 17, item 3): Debian's chromium, driven by Playwright,
against a running Fleetward (projector, watchdog, API). Signed in with a viewer token, the pages
show an agent go offline and its escalation appear, without reloading; an agent's page shows its
timeline; the board shows a task in review with what depends on it, and no buttons for a viewer;
the spend page draws the team's spend. Signed in with an operator's token, a task is approved
from the board and moves to done (a refused click shows the server's one line), an escalation is
acknowledged and an agent paused from its page. The screenshots are kept under the test's tmp
folder (their paths are printed).

Chromium comes from Debian (``make test`` installs it: ``make chromium``); Playwright never
downloads a browser here. Without it the test fails and says why: it is never skipped."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from playwright.async_api import Browser, Locator, Page, async_playwright

from fleetward.schemas.events import (
    Deliverable,
    Event,
    Heartbeat,
    SpendRecorded,
    TaskClaimed,
    TaskCreated,
    TaskSubmitted,
)
from fleetward.services.jetstream.publish import publish, publish_many
from fleetward.services.runtime.connect import Runtime
from tests.helpers import creds, envelope
from tests.integration.api_harness import INTERVAL, running_api, token_of
from tests.integration.test_watchdog import register

CHROMIUM = os.environ.get("FLEETWARD_CHROMIUM", "/usr/bin/chromium")
WAIT_MS = 30_000


async def beat(rt: Runtime, agents: set[str]) -> None:
    """Heartbeats of ``agents`` (those still in it) every third of an interval, until cancelled."""
    while True:
        for agent in sorted(agents):
            await publish(rt.js, Heartbeat(**envelope(agent), agent=agent, status="busy"))
        await anyio.sleep(INTERVAL / 3)


def in_review(agent: str, task: str) -> list[Event]:
    """``task`` created, claimed by ``agent`` and handed in (for $0.25): in review; and a task
    after it."""
    return [
        TaskCreated(**envelope("user:ops"), task=task, project="web", title="Write the guide",
                    priority="high"),
        TaskClaimed(**envelope(agent), task=task, agent=agent, epoch=1),
        TaskSubmitted(**envelope(agent), task=task, agent=agent, epoch=1,
                      deliverable=Deliverable(kind="link", sha256="0" * 64)),
        TaskCreated(**envelope("user:ops"), task=f"{task}-next", project="web",
                    title="Publish the guide", depends_on=(task,)),
        SpendRecorded(**envelope(agent), agent=agent, model="m", cost_usd=0.25, task=task),
    ]  # fmt: skip


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    assert os.access(CHROMIUM, os.X_OK), (
        f"no chromium at {CHROMIUM}: `make chromium` installs Debian's (apt-get install chromium)"
    )
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM)
        try:
            yield browser
        finally:
            await browser.close()


async def signed_in(browser: Browser, base: str, token: str, problems: list[str]) -> Page:
    """A page signed in with ``token`` (the link `make run` prints), its errors kept."""
    page = await browser.new_page(viewport={"width": 1400, "height": 900})
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}"))
    await page.goto(f"{base}/login#token={token}")
    await page.wait_for_url(f"{base}/", timeout=WAIT_MS)
    await page.locator("#live.on").wait_for(timeout=WAIT_MS)
    return page


async def go(page: Page, where: str) -> None:
    """Follow a link of the dashboard's navigation (a hash change: no reload)."""
    await page.locator(f'nav a[href="{where}"]').click()


async def offline_without_reload(page: Page, alive: set[str], shots: Path) -> None:
    """web-quiet falls silent: the agents table, the escalations and the overview show it."""
    assert await page.locator("#whoami").inner_text() == "user:viewer (viewer)"
    await go(page, "#/agents")
    quiet = page.locator('#agents tr[data-agent-id="web-quiet"]')
    await quiet.locator("td.s-active").wait_for(timeout=WAIT_MS)
    await page.evaluate("window.notReloaded = true")

    alive.discard("web-quiet")  # it falls silent: the watchdog takes it offline
    await quiet.locator("td.s-offline").wait_for(timeout=WAIT_MS)
    assert await page.locator('#agents tr[data-agent-id="web-busy"] td.s-active').count()
    await page.screenshot(path=str(shots / "dashboard-agents.png"), full_page=True)

    await go(page, "#/escalations")
    escalation = page.locator("#escalations tbody tr", has_text="web-quiet")
    await escalation.locator("td", has_text="heartbeat_missed").wait_for(timeout=WAIT_MS)
    assert not await escalation.locator("button.ack").is_visible()  # a viewer: no buttons

    await go(page, "#/")
    await page.locator("#escalations-by-tier-critical").wait_for(timeout=WAIT_MS)
    offline = page.locator('#silent tr[data-agent-id="web-quiet"]')
    await offline.locator("td.t-critical", has_text="offline").wait_for(timeout=WAIT_MS)
    await page.screenshot(path=str(shots / "dashboard-overview.png"), full_page=True)
    assert await page.evaluate("window.notReloaded === true"), "the page reloaded"


async def agent_page(page: Page, shots: Path) -> None:
    """From the overview's offline list to the agent's page: its status and timeline."""
    await page.locator('#silent tr[data-agent-id="web-quiet"] a').click()
    facts = page.locator("#agent-facts")
    await facts.locator('dd[data-fact="status"].s-offline').wait_for(timeout=WAIT_MS)
    await page.locator('#timeline tr[data-kind="escalation"]').first.wait_for(timeout=WAIT_MS)
    await page.locator('#timeline tr[data-kind="version"]').wait_for(timeout=WAIT_MS)
    assert not await page.locator("#agent-pause").is_visible()
    await page.screenshot(path=str(shots / "dashboard-agent.png"), full_page=True)


def card(page: Page, status: str, task: str) -> Locator:
    return page.locator(f'#board .column[data-status="{status}"] .task[data-task-id="{task}"]')


async def board(page: Page, shots: Path) -> None:
    """The board: the task in review, the one after it waiting, a filter, no viewer buttons."""
    await go(page, "#/board")
    review = card(page, "review", "guide")
    await review.wait_for(timeout=WAIT_MS)
    assert "held by web-busy" in await review.inner_text()
    nxt = card(page, "inbox", "guide-next")
    assert "after: guide (waiting)" in await nxt.inner_text()
    assert not await review.locator("button.approve").is_visible()
    await page.select_option("#board-priority", "high")  # a filter: only the high one
    await nxt.wait_for(state="detached", timeout=WAIT_MS)
    assert await review.count() == 1
    await page.screenshot(path=str(shots / "dashboard-board.png"), full_page=True)

    await go(page, "#/spend")  # team t's quarter of a dollar today, as a bar
    await page.locator('#spend-chart rect[data-team="t"]').wait_for(timeout=WAIT_MS)
    assert "$0.2500" in await page.locator("#spend tbody").inner_text()
    await page.screenshot(path=str(shots / "dashboard-spend.png"), full_page=True)


async def operator_reviews(page: Page, shots: Path) -> None:
    """An operator approves the task in review from the board: it moves to done, and the task
    after it is no longer waiting; a refused click shows the server's one line. Then it
    acknowledges an escalation and pauses an agent from its page."""
    assert await page.locator("#whoami").inner_text() == "user:ops (operator)"
    await go(page, "#/board")
    await page.evaluate("window.notReloaded = true")
    nxt = card(page, "inbox", "guide-next")
    await nxt.locator("input").fill("nobody")  # no such agent: the server refuses the assignment
    await nxt.locator("button.assign").click()
    flash = page.locator("#flash.bad")
    await flash.wait_for(timeout=WAIT_MS)
    assert "nobody" in await flash.inner_text()

    review = card(page, "review", "guide")
    await review.locator("input").fill("clear and complete")
    await review.locator("button.approve").click()
    await card(page, "done", "guide").wait_for(timeout=WAIT_MS)
    assert await review.count() == 0
    await nxt.locator(".deps:not(.waiting)").wait_for(timeout=WAIT_MS)
    await page.screenshot(path=str(shots / "dashboard-reviewed.png"), full_page=True)

    await go(page, "#/escalations")  # acknowledge web-quiet's open escalation
    quiet = page.locator("#escalations tbody tr", has_text="web-quiet")
    await quiet.locator("button.ack").first.click()
    await quiet.locator("td.e-acknowledged").first.wait_for(timeout=WAIT_MS)

    await page.goto(page.url.split("#")[0] + "#/agents/web-busy")  # pause web-busy
    await page.evaluate("window.notReloaded = true")
    await page.locator("#agent-reason").fill("look at its output")
    await page.locator("#agent-pause").click()
    status = page.locator('#agent-facts dd[data-fact="status"]')
    await page.locator('#agent-facts dd[data-fact="status"].s-paused').wait_for(timeout=WAIT_MS)
    assert "look at its output" in await status.inner_text()
    assert await page.evaluate("window.notReloaded === true"), "the page reloaded"


@pytest.mark.slow
async def test_the_dashboard_shows_an_agent_go_offline_and_its_escalation_without_reload(
    rt: Runtime, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await publish_many(
        rt.js, [register("web-quiet"), register("web-busy"), *in_review("web-busy", "guide")]
    )
    alive = {"web-quiet", "web-busy"}
    creds(rt, "user:ops")  # an admin of the test stream (tests/helpers.py): reviews as itself
    problems: list[str] = []  # the page's errors and console lines, shown if it fails
    async with running_api(rt) as api, anyio.create_task_group() as tg, chromium() as browser:
        tg.start_soon(beat, rt, alive)
        page = await signed_in(browser, api.base, api.token, problems)
        try:
            await offline_without_reload(page, alive, tmp_path)
            await agent_page(page, tmp_path)
            await board(page, tmp_path)
            await page.close()
            page = await signed_in(browser, api.base, token_of(api, "user:ops"), problems)
            await operator_reviews(page, tmp_path)
        except Exception:
            await page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            print(f"the page at the failure: {tmp_path / 'failure.png'}\n" + "\n".join(problems))
            print(await page.content())
            raise
        tg.cancel_scope.cancel()
    names = ("agents", "overview", "agent", "board", "spend", "reviewed")
    shots = [tmp_path / f"dashboard-{name}.png" for name in names]
    with capsys.disabled():
        print("\ndashboard screenshots: " + " ".join(map(str, shots)))
    for shot in shots:
        assert (await anyio.Path(shot).stat()).st_size > 0
