"""The task API on NATS: request/reply answers that need the projection, for agents that have
no Postgres. ``fw.api.tasks.claimable`` {"agent", "roles", "limit"} -> {"tasks": [ids]};
``fw.api.agents.get`` {"agent"} -> {"agent": {agent_id, name, owner, team, status, ...} | null}
(a failure is an answer too, with ``error`` set).

The answer is a ranking hint from the task board; whether a claim takes the task is decided on
the stream (services/client/claims.py). Run beside the projector (``fleetward dev`` and
``fleetward projector`` start it)."""

from __future__ import annotations

import logging

import anyio
import msgspec
from nats.aio.msg import Msg

from fleetward.schemas.subjects import API_AGENTS_GET, API_TASKS_CLAIMABLE
from fleetward.services.db import Conn, q
from fleetward.services.runtime.connect import Runtime

log = logging.getLogger("fleetward.taskapi")


class ClaimableRequest(msgspec.Struct, frozen=True):
    agent: str
    roles: list[str] = []
    limit: int = 20


class AgentRequest(msgspec.Struct, frozen=True):
    agent: str


async def agent_record(conn: Conn, data: bytes) -> bytes:
    """The answer of ``fw.api.agents.get``: the agent's registry row, or null."""
    try:
        req = msgspec.json.decode(data, type=AgentRequest)
    except msgspec.DecodeError as exc:
        return msgspec.json.encode({"agent": None, "error": f"bad request: {exc}"})
    row = await conn.fetchrow(q("agent_get"), req.agent)
    return msgspec.json.encode({"agent": dict(row) if row is not None else None})


async def serve_task_api(rt: Runtime) -> None:
    """Answer task API requests until cancelled (a queue group: run as many as you like)."""

    async def answer(msg: Msg) -> None:
        try:
            req = msgspec.json.decode(msg.data, type=ClaimableRequest)
            async with rt.pool.acquire() as conn:
                rows = await conn.fetch(
                    q("claimable_tasks"), req.agent, req.roles, max(1, min(req.limit, 200))
                )
            body = msgspec.json.encode({"tasks": [r["task_id"] for r in rows]})
        except msgspec.DecodeError as exc:
            body = msgspec.json.encode({"tasks": [], "error": f"bad request: {exc}"})
        except Exception as exc:  # an answer, never a dead responder
            log.warning("task API: %s", exc)
            body = msgspec.json.encode({"tasks": [], "error": "the task board is unavailable"})
        await msg.respond(body)

    async def answer_agent(msg: Msg) -> None:
        try:
            async with rt.pool.acquire() as conn:
                body = await agent_record(conn, msg.data)
        except Exception as exc:  # an answer, never a dead responder
            log.warning("agent API: %s", exc)
            body = msgspec.json.encode({"agent": None, "error": "the registry is unavailable"})
        await msg.respond(body)

    subs = [
        await rt.nc.subscribe(API_TASKS_CLAIMABLE, queue="fleetward-taskapi", cb=answer),
        await rt.nc.subscribe(API_AGENTS_GET, queue="fleetward-taskapi", cb=answer_agent),
    ]
    try:
        await anyio.sleep_forever()
    finally:
        for sub in subs:
            await sub.unsubscribe()
