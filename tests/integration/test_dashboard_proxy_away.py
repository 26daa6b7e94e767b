"""The dashboard behind a proxy that goes away for a while (services/api/static/dashboard.js
``follow``). While the proxy answers 502, the browser's reconnect of the live stream is refused,
which ends an EventSource for good, and the page's ``whoami`` fails too. The page opens a new
stream after a wait that doubles at each refusal (2 s, 4 s, ... up to 30 s); once the proxy is
back, the page is live again and shows what changed meanwhile, without a reload, on a page
whose first reading failed while the proxy was away too. (Before, a failed ``whoami`` left the
page "reconnecting" for ever, and a page whose first reading failed stayed empty.)"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import anyio
from anyio.abc import SocketStream

from fleetward.services.jetstream.publish import publish
from fleetward.services.runtime.connect import Runtime
from tests.helpers import wait_for
from tests.integration.api_harness import running_api
from tests.integration.test_dashboard_browser import WAIT_MS, chromium, signed_in
from tests.integration.test_watchdog import register

BAD_GATEWAY = (
    b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 11\r\nconnection: close\r\n\r\nbad gateway"
)


class Proxy:
    """A TCP proxy on loopback to ``port`` that can go away: ``away()`` closes every open
    connection and answers each new request 502 until ``back()``."""

    def __init__(self, port: int) -> None:
        self.port, self.gone, self.refused = port, False, 0
        self.open: set[anyio.CancelScope] = set()
        self.base = ""

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0) as lis:
            port = lis.extra(anyio.abc.SocketAttribute.local_port)
            self.base = f"http://127.0.0.1:{port}"
            task_status.started()
            await lis.serve(self._one)

    async def _one(self, client: SocketStream) -> None:
        async with client:
            if self.gone:
                with contextlib.suppress(Exception):
                    await client.receive()  # the request's first bytes
                    await client.send(BAD_GATEWAY)
                self.refused += 1
                return
            with anyio.CancelScope() as scope:
                self.open.add(scope)
                try:
                    upstream = await anyio.connect_tcp("127.0.0.1", self.port)
                    async with upstream, anyio.create_task_group() as tg:
                        tg.start_soon(self._pipe, client, upstream, tg.cancel_scope)
                        tg.start_soon(self._pipe, upstream, client, tg.cancel_scope)
                finally:
                    self.open.discard(scope)

    @staticmethod
    async def _pipe(a: SocketStream, b: SocketStream, done: anyio.CancelScope) -> None:
        with contextlib.suppress(Exception):
            async for chunk in a:
                await b.send(chunk)
        done.cancel()

    def away(self) -> None:
        self.gone = True
        for scope in list(self.open):
            scope.cancel()

    def back(self) -> None:
        self.gone = False


@asynccontextmanager
async def proxied(port: int) -> AsyncIterator[Proxy]:
    proxy = Proxy(port)
    async with anyio.create_task_group() as tg:
        await tg.start(proxy.serve)
        try:
            yield proxy
        finally:
            tg.cancel_scope.cancel()


async def test_the_dashboard_is_live_again_once_a_proxy_that_went_away_is_back(
    rt: Runtime,
) -> None:
    problems: list[str] = []
    async with running_api(rt) as api, chromium() as browser:
        port = urlsplit(api.base).port
        assert port is not None
        async with proxied(port) as proxy:
            page = await signed_in(browser, proxy.base, api.token, problems)
            proxy.away()
            await page.locator("#live.off").wait_for(timeout=WAIT_MS)
            await page.locator('nav a[href="#/agents"]').click()  # its first reading fails

            async def refused() -> bool:  # the stream's reconnect, whoami, and a retry
                return proxy.refused >= 3

            await wait_for(refused, 60, "the page to try again while the proxy is away")
            await publish(rt.js, register("came-meanwhile"))  # a change the page cannot see
            proxy.back()
            await page.locator("#live.on").wait_for(timeout=60_000)
            row = page.locator('#agents tr[data-agent-id="came-meanwhile"]')
            await row.wait_for(timeout=WAIT_MS)
            assert await page.evaluate("location.pathname") == "/"
    print(f"refused while away: {proxy.refused}; page messages: {problems}")
