"""The dashboard's agent page (services/api/static/dashboard.js): it read the agent again on a
change of its agents-table row, of its escalations, and of a task whose assignee is it *now*. A
task taken from it (revoked: the assignee becomes nobody) was none of these, so the page kept
showing that the agent holds the task (found by an attack). Now a change of a task the page
shows it holding reads it again too."""

from __future__ import annotations

from pathlib import Path

import httpx

from fleetward.schemas.events import TaskClaimed, TaskCreated
from fleetward.services.client import FleetClient
from fleetward.services.jetstream.publish import publish_many
from fleetward.services.runtime.connect import Runtime
from tests.helpers import envelope
from tests.integration.api_harness import running_api
from tests.integration.test_dashboard_browser import WAIT_MS, chromium, signed_in
from tests.integration.test_watchdog import register


async def test_an_agents_page_stops_showing_a_task_revoked_from_it(
    rt: Runtime, ops: FleetClient, tmp_path: Path
) -> None:
    await publish_many(rt.js, [
        register("hold-1", interval=3600),  # no heartbeat is due: the watchdog stays quiet
        TaskCreated(**envelope("user:ops"), task="held-t", project="p", title="Held"),
        TaskClaimed(**envelope("hold-1"), task="held-t", agent="hold-1", epoch=1),
    ])  # fmt: skip
    problems: list[str] = []
    async with running_api(rt) as api, chromium() as browser:
        page = await signed_in(browser, api.base, api.token, problems)
        await page.goto(page.url.split("#")[0] + "#/agents/hold-1")
        holds = page.locator('#agent-facts dd[data-fact="holds"]')
        await page.locator('#agent-facts dd[data-fact="holds"]', has_text="held-t").wait_for(
            timeout=WAIT_MS
        )
        await ops.revoke("held-t", "taken back")
        try:
            await page.locator('#agent-facts dd[data-fact="holds"]', has_text="nothing").wait_for(
                timeout=WAIT_MS
            )
        except Exception:
            async with httpx.AsyncClient(base_url=api.base) as web:  # what the route says
                row = (
                    await web.get(
                        "/api/v1/agents/hold-1", headers={"authorization": f"Bearer {api.token}"}
                    )
                ).json()
            assert row["holds"] == [], row  # the view has it: only the page is stale
            await page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            raise AssertionError(
                f"30 s after the revoke the page still says holds: {await holds.inner_text()!r}"
                f" while GET /api/v1/agents/hold-1 says holds {row['holds']}"
                f" ({tmp_path / 'failure.png'}; {problems})"
            ) from None
