"""The task API on NATS: the ``fw.api.*`` answers that need the projections, for agents that
have no Postgres. The shapes are the contract's (``schemas/api.py``):

- ``fw.api.tasks.claimable`` {"agent", "roles", "limit"} -> {"tasks": [ids]}, from the board;
- ``fw.api.agents.get`` {"agent"} -> {"agent": {...} | null}, from the agent registry.

Every request gets one reply on its inbox (a reply subject that is not an inbox gets none:
``schemas.grants.is_inbox``): a malformed request gets ``error`` "bad request: ...", an
unreadable projection ``error`` "... is unavailable" (never silence, never a dead responder).
An answer is a hint from the projection; whether a claim takes a task is decided on the stream
(services/client/claims.py). Run beside the projector (``fleetward dev`` and ``fleetward
projector`` start it); a queue group, so run as many as you like.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import anyio
import anyio.abc
import msgspec
from nats.aio.msg import Msg

from fleetward.projections.agents import AgentRegistry
from fleetward.schemas.api import (
    AGENTS_GET,
    TASKS_CLAIMABLE,
    AgentProfile,
    AgentReply,
    AgentRequest,
    ClaimableReply,
    ClaimableRequest,
    Endpoint,
    Rep,
    Req,
    bad_request,
    unavailable,
)
from fleetward.schemas.grants import is_inbox
from fleetward.services.db import q
from fleetward.services.runtime.connect import Runtime

log = logging.getLogger("fleetward.taskapi")

QUEUE_GROUP = "fleetward-taskapi"
NOT_ANSWERED = [0]  # requests whose reply subject is not an inbox, in this process


class _NotTheAsker(Exception):
    """A per-actor request names another agent than the subject it was sent on."""


def _as_asker(request: Req, subject: str) -> Req:
    """``request`` with ``agent`` set to the asker: the last token of ``subject``
    (``<endpoint>.<agent>``, which only that agent's credentials may publish on)."""
    asker = subject.rsplit(".", 1)[-1]
    named = getattr(request, "agent", None)
    if named is not None and named != asker:
        raise _NotTheAsker(f"the request names agent {named} but was sent by {asker}")
    return msgspec.structs.replace(request, agent=asker)


def responder(
    endpoint: Endpoint[Req, Rep],
    answer: Callable[[Req], Awaitable[Rep]],
    refuse: Callable[[Req, str], str | None] | None = None,
) -> Callable[[Msg], Awaitable[None]]:
    """The NATS callback of one endpoint: decode the request, ``answer`` it, reply; a failure
    of either becomes a reply with ``error``. A per-actor endpoint's request gets the subject's
    last token as its ``agent`` (refused when the request names another). ``refuse(request,
    reply subject)``, when given, may refuse a request before it is answered (the error, else
    None): e.g. one that asks for another identity than the one whose inbox waits."""

    async def respond(msg: Msg) -> None:
        if not msg.reply:
            return  # published, not requested: nobody waits for an answer
        if not is_inbox(msg.reply):  # aimed at a stream or an API, not at a requester's inbox
            NOT_ANSWERED[0] += 1
            if NOT_ANSWERED[0] & (NOT_ANSWERED[0] - 1) == 0:  # the 1st, 2nd, 4th, 8th...
                log.warning(
                    "task API %s: no answer on %r, not an inbox (%d such so far)",
                    endpoint.subject, msg.reply, NOT_ANSWERED[0],
                )  # fmt: skip
            return
        try:
            request = msgspec.json.decode(msg.data, type=endpoint.request)
            if endpoint.per_actor:
                request = _as_asker(request, msg.subject)
            why = None if refuse is None else refuse(request, msg.reply)
            reply = endpoint.failed(why) if why is not None else await answer(request)
        except msgspec.DecodeError as exc:  # not JSON, or not the request's shape
            reply = endpoint.failed(bad_request(str(exc)))
        except _NotTheAsker as exc:
            reply = endpoint.failed(str(exc))
        except Exception as exc:  # an answer, never a dead responder
            log.warning("task API %s: %s", endpoint.subject, exc)
            reply = endpoint.failed(unavailable(endpoint))
        await msg.respond(msgspec.json.encode(reply))

    return respond


async def serve_task_api(
    rt: Runtime, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Answer ``fw.api.*`` requests until cancelled; started (``task_status``) once the server
    knows the subscriptions."""

    async def claimable(req: ClaimableRequest) -> ClaimableReply:
        async with rt.pool.acquire() as conn:
            rows = await conn.fetch(q("claimable_tasks"), req.agent, list(req.roles), req.limit)
        return ClaimableReply(tasks=tuple(r["task_id"] for r in rows))

    async def agent(req: AgentRequest) -> AgentReply:
        async with rt.pool.acquire() as conn, conn.transaction(isolation="repeatable_read",
                                                               readonly=True):  # fmt: skip
            row = await conn.fetchrow(q("agent_profile"), req.agent)  # one snapshot: the row
            applied = await conn.fetchval(q("checkpoint_get"), AgentRegistry.name)  # and its seq
        return AgentReply(agent=None if row is None else AgentProfile(**dict(row)),
                          checkpoint=applied or 0)  # fmt: skip

    subs = [
        await rt.nc.subscribe(
            TASKS_CLAIMABLE.subject, queue=QUEUE_GROUP, cb=responder(TASKS_CLAIMABLE, claimable)
        ),
        await rt.nc.subscribe(
            AGENTS_GET.subject, queue=QUEUE_GROUP, cb=responder(AGENTS_GET, agent)
        ),
    ]
    await rt.nc.flush()
    task_status.started()
    try:
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            for sub in subs:
                await sub.unsubscribe()
