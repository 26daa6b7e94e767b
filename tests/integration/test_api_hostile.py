"""What a newcomer's attack on the HTTP API found (issue 17), each answered with a 4xx at once:
ids in paths that are no ids (NATS wildcards, separators, NUL, 20,000 characters) never reach
NATS or Postgres; text with NUL in a body or a query is refused before it is published or read
(it would be acknowledged, then dead-lettered); tokens whose times are out of range are bad
tokens, not a 500; the sign-in takes only a person's token, as JSON."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import anyio
import httpx
import msgspec
import pytest

from fleetward.services.api import token
from fleetward.services.auth.server import push_account
from fleetward.services.auth.store import AuthStore
from fleetward.services.client import FleetClient
from fleetward.services.runtime.connect import Runtime
from tests.helpers import creds, wait_for
from tests.integration.api_harness import running_api, token_of
from tests.integration.test_ingress import INGRESS, agent_token, bearer

NOT_IDS = [">", "*", "ncw.*", "ncw.>", "a.b", "a b", "a%00b", "x" * 65, "x" * 20_000, "%C3%BC"]


def _forged(key: bytes, exp: int) -> str:
    """A token signed with the right key whose expiry is ``exp`` (no issuer makes one so)."""
    claims = token.Claims("user:ops", "viewer", int(time.time()), exp)
    payload = base64.urlsafe_b64encode(msgspec.json.encode(claims)).rstrip(b"=").decode()
    signed = f"{token.PREFIX}.{payload}"
    mac = hmac.new(key, signed.encode(), hashlib.sha256).digest()
    return f"{signed}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


async def test_hostile_ids_text_and_tokens_get_a_4xx_at_once(rt: Runtime, ops: FleetClient) -> None:
    await ops.create_task("ncw", project="p", title="t")
    async with running_api(rt) as api, httpx.AsyncClient(base_url=api.base, timeout=10) as http:
        agent = bearer(agent_token(rt, "hostile-1"))
        registered = await http.post(f"{INGRESS}/register", headers=agent, json={
            "name": "N", "owner": "o", "team": "t"})  # fmt: skip
        assert registered.status_code == 200, registered.text
        viewer = bearer(api.token)
        for bad in NOT_IDS:  # 404 before anything reads: no wildcard reaches NATS
            for path, who in ((f"{INGRESS}/tasks/{bad}/claim", agent),
                              (f"{INGRESS}/tasks/{bad}/progress", agent),
                              (f"/api/v1/tasks/{bad}", viewer),
                              (f"/api/v1/agents/{bad}", viewer)):  # fmt: skip
                method = http.post if INGRESS in path else http.get
                kwargs = {"json": {"epoch": 1}} if "progress" in path else {}
                answer = await method(path, headers=who, **kwargs)  # type: ignore[operator]
                assert answer.status_code in (404, 414), (path, answer.text)  # 414: too long
                if answer.status_code == 404:
                    assert "ids are 1 to 64" in answer.json()["error"], answer.text

        # text with NUL: refused before it is published (it would be dead-lettered after a 200)
        for path, body in ((f"{INGRESS}/heartbeat", {"message": "a\u0000b"}),
                           (f"{INGRESS}/register", {"name": "N\u0000", "owner": "o",
                                                    "team": "t"})):  # fmt: skip
            answer = await http.post(path, headers=agent, json=body)
            assert answer.status_code == 400, answer.text
            assert "without NUL" in answer.json()["error"]
        for query in ("team=%00", "q=a%00"):  # ... and before it is read
            answer = await http.get(f"/api/v1/agents?{query}", headers=viewer)
            assert answer.status_code == 400 and "without NUL" in answer.json()["error"]

        # tokens: times out of range are bad tokens (401), never a 500
        for exp in (2**53, 99_999_999_999_999):
            who = await http.get("/api/v1/whoami", headers=bearer(_forged(api.key, exp)))
            assert who.status_code == 401, who.text
        with pytest.raises(token.BadToken, match="ten years"):
            token.issue(api.key, "user:ops", time.time(), expires_s=99_999_999_999_999)

        # sign-in: a person's token, as JSON; the answer says when it ends
        expiring = token.issue(api.key, "user:ops", time.time(), expires_s=600)
        signed_in = await http.post("/login", json={"token": expiring})
        assert signed_in.status_code == 200 and signed_in.json()["expires_at"], signed_in.text
        as_form = await http.post("/login", content=f'{{"token": "{expiring}"}}',
                                  headers={"content-type": "text/plain"})  # fmt: skip
        assert as_form.status_code == 415, as_form.text
        as_agent = await http.post("/login", json={"token": agent["authorization"][7:]})
        assert as_agent.status_code == 403, as_agent.text
        operator = bearer(token_of(api, "user:ops"))

        async def still_there() -> bool:  # the real task, untouched by the wildcards above
            answer = await http.get("/api/v1/tasks/ncw", headers=operator)
            return answer.status_code == 200 and answer.json()["status"] == "inbox"

        await wait_for(still_there, what="task ncw in the inbox")


async def test_a_token_dies_with_its_credentials_and_the_live_stream_with_its_token(
    rt: Runtime,
) -> None:
    """A token issued before its holder's credentials were revoked stays refused after new
    credentials are issued (only rotating the key killed it before); the live stream of a
    token that expires ends."""
    store = AuthStore(rt.settings.auth_dir)
    async with running_api(rt) as api, httpx.AsyncClient(base_url=api.base, timeout=30) as http:
        creds(rt, "leaky")
        leaked = bearer(token.issue_agent(api.key, "leaky", time.time() - 10))
        body = {"name": "N", "owner": "o", "team": "t"}
        assert (await http.post(f"{INGRESS}/register", headers=leaked, json=body)).is_success
        store.revoke("leaky")
        await push_account(rt.nats_url, store)
        fresh = bearer(agent_token(rt, "leaky"))  # new credentials, a new token
        beat = await http.post(f"{INGRESS}/heartbeat", headers=fresh, json={})
        assert beat.status_code == 200, beat.text
        old = await http.post(f"{INGRESS}/heartbeat", headers=leaked, json={})
        assert old.status_code == 401 and "revoked" in old.json()["error"], old.text

        brief = bearer(token.issue(api.key, "user:ops", time.time(), expires_s=2))
        with anyio.fail_after(30):  # a stream that did not end would fail here
            async with http.stream("GET", "/api/v1/events", headers=brief) as stream:
                assert stream.status_code == 200
                async for _chunk in stream.aiter_bytes():
                    pass
