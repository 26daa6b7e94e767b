"""The HTTPS ingress's claim asked again (services/api/ingress.py ``claim``): the claim kept by
the ingress's client was answered without being checked against the task, so a claim the agent
lost (revoked, another agent's now) was answered 200 as if still held (found by an attack;
now read again: ``AgentClient.confirm``)."""

from __future__ import annotations

import httpx

from fleetward.services.api import token
from fleetward.services.api.acting import AgentPool
from fleetward.services.api.app import make_app
from fleetward.services.api.ingress import ingress_routes
from fleetward.services.api.live import Live
from fleetward.services.api.write import People
from fleetward.services.client import AgentClient, FleetClient
from fleetward.services.metrics.health import HealthChecks
from fleetward.services.runtime.connect import Runtime
from tests.helpers import creds
from tests.integration.test_ingress import INGRESS, agent_token, bearer


async def test_a_claim_asked_again_after_it_was_revoked_and_retaken_is_not_answered_as_held(
    rt: Runtime, ops: FleetClient
) -> None:
    """h-stale claims t-stale through the ingress (epoch 1); an operator revokes it and a NATS
    agent claims it (epoch 2). h-stale asks its claim again: the task is n-other's: 409 (it was
    answered 200 with h-stale's epoch-1 claim, from ``client.claims``)."""
    await ops.create_task("t-stale", project="p", title="taken back")
    key = token.load_key(rt.settings.auth_dir, create=True)
    who = bearer(agent_token(rt, "h-stale"))
    pool = AgentPool(rt.nats_url, rt.settings.auth_dir)
    app = make_app(rt.pool, key, Live(rt.pool), HealthChecks(), People(rt.nats_url,
                   rt.settings.auth_dir), more=ingress_routes(pool))  # fmt: skip
    other = await AgentClient.connect(rt.nats_url, creds(rt, "n-other"))
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://api"
        ) as http:
            body = {"name": "A", "owner": "o@example.com", "team": "web"}
            assert (await http.post(f"{INGRESS}/register", headers=who, json=body)).is_success
            first = await http.post(f"{INGRESS}/tasks/t-stale/claim", headers=who, json={})
            assert first.status_code == 200, first.text
            assert first.json()["epoch"] == 1
            await ops.revoke("t-stale", "taken back")
            await other.register(name="n", owner="o", team="t")
            won = await other.claim("t-stale")
            assert won.epoch == 2
            again = await http.post(f"{INGRESS}/tasks/t-stale/claim", headers=who, json={})
            assert again.status_code == 409, (again.status_code, again.json())
    finally:
        await other.close()
        await pool.aclose()
