"""Health that tells the truth (issue 11, item 7): ``fleetward projector``'s /healthz and /readyz
answer 503, naming the problem, while the projector cannot do its work, and 200 again once it
can; /livez answers 200 throughout. Against real servers: a Postgres outage, and a projection
that re-positions in a loop (one of its tables renamed away under it: an error no event
caused, so nothing is dead-lettered)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from subprocess import Popen

from fleetward.schemas.events import AgentRegistered
from fleetward.services.jetstream.publish import publish
from fleetward.services.runtime.connect import Runtime
from tests.helpers import envelope, wait_for
from tests.integration.test_cli import http_get, output, spawn
from tests.integration.test_fleet_metrics import postgres_away

STALL_S = 1.0  # FLEETWARD_STALL_S for these projectors


def register(agent: str) -> AgentRegistered:
    return AgentRegistered(**envelope(agent), agent=agent, name=agent, owner="o", team="t")


@contextmanager
def projector(env: dict[str, str], logs: Path) -> Iterator[Popen[bytes]]:
    settings = {"FLEETWARD_METRICS_PORT": "0", "FLEETWARD_STALL_S": str(STALL_S)}
    with spawn(["projector", "--only", "agents"], {**env, **settings}, logs) as proc:
        yield proc


async def ready_port(proc: Popen[bytes], logs: Path) -> int:
    async def port() -> int:
        if proc.poll() is not None:
            raise AssertionError(f"the projector exited {proc.returncode}\n{output(logs)}")
        found = re.search(r"metrics on :(\d+)/metrics", (logs / "stdout").read_text())
        return int(found.group(1)) if found else 0

    return await wait_for(port, 30, "the projector's ready line")


async def health(port: int, path: str = "/healthz") -> tuple[int, dict[str, object]]:
    status, body = await http_get(port, path)
    return status, json.loads(body)


async def wait_healthy(port: int) -> None:
    async def healthy() -> bool:
        status, body = await health(port)
        return status == 200 and body["ok"] is True and body["problems"] == []

    await wait_for(healthy, 30, "/healthz to answer 200")


async def wait_problem(port: int, *words: str) -> list[str]:
    """Until /healthz answers 503 with a problem that holds every one of ``words``."""

    async def found() -> list[str]:
        status, body = await health(port)
        problems = body.get("problems", [])
        assert isinstance(problems, list)
        if status == 503 and any(all(w in p for w in words) for p in problems):
            return [str(p) for p in problems]
        return []

    return await wait_for(found, 30, f"/healthz to answer 503 with {words}")


async def agent_names(rt: Runtime) -> list[str]:
    async with rt.pool.acquire() as conn:
        return [r["agent_id"] for r in await conn.fetch("SELECT agent_id FROM fleet.agents")]


async def test_health_fails_while_postgres_is_away_and_recovers_after(
    rt: Runtime, env: dict[str, str], pg_server: str, tmp_path: Path
) -> None:
    logs = tmp_path / "projector"
    with projector(env, logs) as proc:
        port = await ready_port(proc, logs)
        await wait_healthy(port)
        await publish(rt.js, register("a1"))

        async def applied(n: int) -> bool:
            return len(await agent_names(rt)) == n

        await wait_for(lambda: applied(1), 30, "a1 in the registry")
        async with rt.pool.acquire() as conn:
            database = await conn.fetchval("SELECT current_database()")
        async with postgres_away(pg_server, database):
            await publish(rt.js, register("a2"))  # an event the projector cannot commit
            problems = await wait_problem(port, "projection agents", "no commit for")
            assert (await health(port, "/readyz"))[0] == 503
            assert (await health(port, "/livez")) == (200, {"ok": True})
        await wait_healthy(port)
        await wait_for(lambda: applied(2), 30, "a2 in the registry once Postgres is back")
        status, body = await health(port, "/readyz")
        assert (status, body["ok"], body["problems"]) == (200, True, [])
    assert any("events waiting" in p for p in problems), problems


async def test_health_names_a_projection_that_re_positions_in_a_loop(
    rt: Runtime, env: dict[str, str], tmp_path: Path
) -> None:
    logs = tmp_path / "projector"
    with projector(env, logs) as proc:
        port = await ready_port(proc, logs)
        await publish(rt.js, register("a1"))

        async def applied(n: int) -> bool:
            return len(await agent_names(rt)) == n

        await wait_for(lambda: applied(1), 30, "a1 in the registry")
        async with rt.pool.acquire() as conn:
            await conn.execute("ALTER TABLE fleetward.agents RENAME TO agents_away")
        await publish(rt.js, register("a2"))  # its row cannot even be read now
        problems = await wait_problem(port, "projection agents", "re-positioned", "times")
        assert any("agents" in p and "does not exist" in p for p in problems), problems
        async with rt.pool.acquire() as conn:
            await conn.execute("ALTER TABLE fleetward.agents_away RENAME TO agents")
        await wait_healthy(port)
        await wait_for(lambda: applied(2), 30, "a2 in the registry once the table is back")
    async with rt.pool.acquire() as conn:
        dead = await conn.fetchval("SELECT count(*) FROM fleet.dead_letters")
    assert dead == 0  # no event caused it: none is blamed
