"""The dashboard's live stream at token expiry (services/api/app.py ``_events`` ends the stream
with its token; services/api/static/dashboard.js ``follow``): the EventSource's reconnect is
answered 401, which ends an EventSource for good. The page goes to /login, as every other read
does on 401 (found by an attack: it stayed on the dashboard, "reconnecting", for ever)."""

from __future__ import annotations

import time
from pathlib import Path

from fleetward.services.api import token
from fleetward.services.runtime.connect import Runtime
from tests.integration.api_harness import running_api
from tests.integration.test_dashboard_browser import chromium, signed_in


async def test_the_dashboard_leaves_for_the_login_page_once_its_token_expired(
    rt: Runtime, tmp_path: Path
) -> None:
    problems: list[str] = []
    async with running_api(rt) as api, chromium() as browser:
        short = token.issue(api.key, "user:short", time.time(), expires_s=8)
        page = await signed_in(browser, api.base, short, problems)
        # the token expires after 8 s; the stream ends; the browser's reconnect is refused
        try:
            await page.wait_for_url("**/login", timeout=40_000)
        except Exception:
            live = await page.locator("#live").inner_text()
            raise AssertionError(
                f"40 s on, the page is {page.url}, its live indicator says {live!r}: "
                "nothing will update it again"
            ) from None
