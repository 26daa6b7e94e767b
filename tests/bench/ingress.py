"""HTTP heartbeat ingest through the HTTPS ingress (``--only http``), next to direct JetStream
publishes of the same heartbeats in the same run.

The API runs as its own process (``fleetward api``, as in production) on the run's embedded
servers. The load generator is wrk (Debian's ``wrk``, ``make wrk``; one thread, in C, so that
the generator is not what is measured): ``agents`` keep-alive connections, one request in flight
each, POSTing ``/api/v1/ingress/heartbeat`` for ``seconds``, each request with the token of the
next of ``agents`` agents in turn (wrk's script cannot pin a token to a connection). The
baseline: the same agents, each on its own NATS connection with its own credentials, publishing
the same heartbeats with JetStream publishes (``Nats-Msg-Id``, ack awaited; nats-py in this
process), one in flight each, for as long. Both sides report requests (publishes) per second
and the latency p50/p99 of one request, and the CPU seconds of the API process and of the load
generator (wrk, or this process) over the measured time: on a 2-core machine they compete.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import anyio
import httpx  # waits for the API to answer (the load itself is wrk's)
import psutil

from fleetward.schemas import new_id
from fleetward.schemas.events import Heartbeat
from fleetward.services.api import token
from fleetward.services.auth.store import AuthStore
from fleetward.services.jetstream.connection import connect_as
from fleetward.services.jetstream.publish import encode
from fleetward.services.runtime.connect import Runtime
from tests.bench.kit import percentile

ROOT = Path(__file__).resolve().parents[2]
HEARTBEAT = "/api/v1/ingress/heartbeat"


@dataclass(frozen=True)
class Load:
    """One side's figures: requests/s, latency p50/p99 (s), and CPU seconds of the API process
    and of the load generator's process over the measured time."""

    per_s: float
    p50_s: float
    p99_s: float
    requests: int
    api_cpu_s: float
    client_cpu_s: float


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_api(rt: Runtime, port: int, log: Path) -> subprocess.Popen[bytes]:
    """``fleetward api`` on ``port``, on ``rt``'s servers and signing keys."""
    env = os.environ | {
        "FLEETWARD_NATS_URL": rt.nats_url, "FLEETWARD_DATABASE_URL": rt.database_url,
        "FLEETWARD_AUTH_DIR": str(rt.settings.auth_dir), "FLEETWARD_HOME": str(rt.settings.home),
        "FLEETWARD_API_PORT": str(port), "FLEETWARD_METRICS_PORT": "0",
    }  # fmt: skip
    args = [sys.executable, "-m", "fleetward.services.cli", "api"]
    with log.open("ab") as out:
        return subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


async def _until_up(base: str, proc: subprocess.Popen[bytes], deadline_s: float = 60) -> None:
    deadline = time.monotonic() + deadline_s
    async with httpx.AsyncClient(base_url=base) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"fleetward api exited ({proc.returncode}): see its log")
            try:
                if (await http.post(HEARTBEAT)).status_code == 401:  # up, and no token sent
                    return
            except httpx.TransportError:
                pass
            await anyio.sleep(0.2)
    raise SystemExit("fleetward api did not answer within 60 s")


async def _timed(
    agents: list[str], seconds: float, one: Callable[[int], Awaitable[None]]
) -> list[float]:
    """Every agent calls ``one(i)`` in a loop for ``seconds``: the latencies of the calls."""
    latencies: list[float] = []
    stop_at = time.monotonic() + seconds

    async def loop(i: int) -> None:
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            await one(i)
            latencies.append(time.perf_counter() - started)

    async with anyio.create_task_group() as tg:
        for i in range(len(agents)):
            tg.start_soon(loop, i)
    return latencies


def _load(latencies: list[float], elapsed: float, cpu: tuple[float, float]) -> Load:
    return Load(len(latencies) / elapsed, percentile(latencies, 0.5), percentile(latencies, 0.99),
                len(latencies), cpu[0], cpu[1])  # fmt: skip


def _cpu(*procs: psutil.Process) -> list[float]:
    return [float(t.user + t.system) for t in (p.cpu_times() for p in procs)]


WRK_SCRIPT = """
local tokens = {%s}
local n, i = #tokens, 0
local body = '{"status":"busy"}'
request = function()
  i = i + 1
  local headers = {["Authorization"] = "Bearer " .. tokens[(i %% n) + 1],
                   ["Content-Type"] = "application/json"}
  return wrk.format("POST", "%s", headers, body)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\n{"requests":%%d,"duration_us":%%d,"p50_us":%%d,"p99_us":%%d,"non2xx":%%d,"failed":%%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
"""


async def over_http(
    base: str, api: psutil.Process, tokens: list[str], seconds: float, script: Path
) -> Load:
    """``len(tokens)`` connections heartbeating through the ingress for ``seconds`` (wrk)."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is not installed: make wrk (Debian's package wrk)")
    quoted = ", ".join(f'"{t}"' for t in tokens)

    def run(duration: float) -> tuple[dict[str, float], float]:
        script.write_text(WRK_SCRIPT % (quoted, HEARTBEAT))
        args = [wrk, "-t1", f"-c{len(tokens)}", f"-d{duration:g}s", "-s", str(script), base]
        before = _cpu(api)[0]
        done = subprocess.run(args, capture_output=True, text=True, check=True)
        last = [line for line in done.stdout.splitlines() if line.startswith("{")][-1]
        return json.loads(last), _cpu(api)[0] - before

    await anyio.to_thread.run_sync(run, 2.0)  # every agent's connection opened, warm
    children = psutil.Process().cpu_times()
    figures, api_cpu = await anyio.to_thread.run_sync(run, seconds)
    after = psutil.Process().cpu_times()
    wrk_cpu = (after.children_user + after.children_system) - (
        children.children_user + children.children_system
    )
    if figures["non2xx"] or figures["failed"]:
        raise SystemExit(f"the ingress refused or failed requests: {figures}")
    duration = figures["duration_us"] / 1e6
    return Load(figures["requests"] / duration, figures["p50_us"] / 1e6,
                figures["p99_us"] / 1e6, int(figures["requests"]), api_cpu, wrk_cpu)  # fmt: skip


async def direct(rt: Runtime, agents: list[str], api: psutil.Process, seconds: float) -> Load:
    """The same agents publishing the same heartbeats straight to JetStream, each on its own
    connection with its own credentials, for ``seconds``."""
    store = AuthStore(rt.settings.auth_dir)
    conns = [await connect_as(rt.nats_url, store.ensure(a), a) for a in agents]
    try:
        streams = [nc.jetstream(timeout=10) for nc in conns]

        async def beat(i: int) -> None:
            agent = agents[i]
            hb = Heartbeat(id=new_id(), actor=agent, at=datetime.now(UTC), agent=agent,
                           status="busy")  # fmt: skip
            await streams[i].publish(f"fw.hb.{agent}", encode(hb), headers={"Nats-Msg-Id": hb.id})

        await _timed(agents, 2.0, beat)
        me = psutil.Process()
        before, started = _cpu(api, me), time.perf_counter()
        latencies = await _timed(agents, seconds, beat)
        elapsed, after = time.perf_counter() - started, _cpu(api, me)
    finally:
        for nc in conns:
            await nc.close()
    return _load(latencies, elapsed, (after[0] - before[0], after[1] - before[1]))


async def run_ingress_bench(
    rt: Runtime, agents: int, seconds: float, runs: int, log: Path
) -> list[tuple[Load, Load]]:
    """``runs`` pairs of (over HTTP, direct), alternating, with one API process for all."""
    ids = [f"http-{i:03d}" for i in range(agents)]
    key = token.load_key(rt.settings.auth_dir, create=True)
    store = AuthStore(rt.settings.auth_dir)
    for agent in ids:
        store.ensure(agent)  # as 'fleetward api token --agent' does
    tokens = [token.issue_agent(key, a, time.time()) for a in ids]
    port = _free_port()
    proc = start_api(rt, port, log)
    try:
        base = f"http://127.0.0.1:{port}"
        await _until_up(base, proc)
        api = psutil.Process(proc.pid)
        out = []
        for _ in range(runs):
            http_load = await over_http(base, api, tokens, seconds, log.with_name("wrk.lua"))
            out.append((http_load, await direct(rt, ids, api, seconds)))
        return out
    finally:
        proc.terminate()
        proc.wait(30)
