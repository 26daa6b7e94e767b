"""The task API on NATS: request/reply answers that need the projection, for agents that have
no Postgres. ``fw.api.tasks.claimable`` {"agent", "roles", "limit"} -> {"tasks": [ids]}.

The answer is a ranking hint from the task board; whether a claim takes the task is decided on
the stream (services/client/claims.py). Run beside the projector (``fleetward dev`` and
``fleetward projector`` start it)."""

from __future__ import annotations

import logging

import anyio
import msgspec
from nats.aio.msg import Msg

from fleetward.schemas.subjects import API_TASKS_CLAIMABLE
from fleetward.services.db import q
from fleetward.services.runtime.connect import Runtime

log = logging.getLogger("fleetward.taskapi")


class ClaimableRequest(msgspec.Struct, frozen=True):
    agent: str
    roles: list[str] = []
    limit: int = 20


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

    sub = await rt.nc.subscribe(API_TASKS_CLAIMABLE, queue="fleetward-taskapi", cb=answer)
    try:
        await anyio.sleep_forever()
    finally:
        await sub.unsubscribe()
