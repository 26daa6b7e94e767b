"""The watchdog benchmark: many agents heartbeating, a share of them falling silent.

A ``fleetward watchdog`` process (a subprocess, as in production) follows ``agents`` agents that
heartbeat every ``interval`` seconds, spread evenly over the interval. After it has caught up and
passed its grace, the run lasts ``seconds``; part-way through, ``silent_share`` of the agents stop
heartbeating, late enough that each one's warning deadline falls inside the run.

Figures: the watchdog's CPU seconds over the run (and as a share of one core), its peak RSS, the
time it took to start judging, and the detection delay of the warnings: the stream time at which
each escalation was stored minus its deadline (the stream time of the agent's last heartbeat plus
interval x 2), p50 / p99 / max; plus misses and false escalations, which should both be 0.

Run it alone: ``python -m tests.bench.watchdog [--quick]`` prints the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import anyio
import msgspec
from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from fleetward.schemas import new_id, subject_of
from fleetward.schemas.admission import admit
from fleetward.schemas.events import AgentRegistered, EscalationRaised, Heartbeat
from fleetward.services.config import Settings
from fleetward.services.jetstream.follower import StreamFollower
from fleetward.services.runtime.connect import Runtime, connect_nats, open_runtime
from tests.bench.kit import ProcessWatch, percentile
from tests.helpers import HARNESS, as_harness, creds

ROOT = Path(__file__).resolve().parents[2]
TICK = 0.05  # the heartbeat publisher's tick


async def _register(rt: Runtime, names: list[str], interval: float) -> None:
    enc, at = msgspec.json.Encoder(), datetime.now(UTC)
    before = (await rt.js.stream_info("FW_EVENTS")).state.messages
    for i in range(0, len(names), 5_000):
        for a in names[i : i + 5_000]:
            event = AgentRegistered(id=new_id(), actor=a, at=at, agent=a, name=a, owner="bench",
                                    team="bench", heartbeat_interval_s=interval)  # fmt: skip
            await rt.nc.publish(subject_of(event), enc.encode(event))
        await rt.nc.flush()
    deadline = time.monotonic() + 120
    while (await rt.js.stream_info("FW_EVENTS")).state.messages < before + len(names):
        if time.monotonic() > deadline:
            raise SystemExit("the registrations were not all stored")
        await anyio.sleep(0.1)


class Beats:
    """Each agent heartbeats once per interval; the agents are spread over the interval."""

    def __init__(self, rt: Runtime, names: list[str], interval: float) -> None:
        self.rt, self.names, self.interval = rt, names, interval
        enc, at = msgspec.json.Encoder(), datetime.now(UTC)
        # each heartbeat needs a new id (a copy is no sign of life): the id is spliced in
        marker = "0" * len(new_id())
        self.payloads: list[tuple[str, bytes, bytes]] = []
        for a in names:
            encoded = enc.encode(Heartbeat(id=marker, actor=a, at=at, agent=a, status="busy"))
            head, tail = encoded.split(marker.encode(), 1)
            self.payloads.append((f"fw.hb.{a}", head, tail))
        self.silent: set[int] = set()
        self.sent = 0
        # Stopped by a flag, never cancelled: cancelling nc.flush() leaves a cancelled PONG
        # future behind, and nats-py's read loop dies on it (InvalidStateError) when the PONG
        # arrives, taking the connection's later requests with it.
        self.stopping = False
        self.stopped = anyio.Event()

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            self.stopped.set()

    async def _run(self) -> None:
        n, per_tick = len(self.payloads), len(self.payloads) * TICK / self.interval
        nc, owed, i = self.rt.nc, 0.0, 0
        while not self.stopping:
            started = time.perf_counter()
            owed += per_tick
            while owed >= 1:
                owed -= 1
                k = i % n
                i += 1
                if k not in self.silent:
                    subject, head, tail = self.payloads[k]
                    await nc.publish(subject, head + new_id().encode() + tail)
                    self.sent += 1
            await nc.flush()
            await anyio.sleep(max(0.0, TICK - (time.perf_counter() - started)))


def _start_watchdog(rt: Runtime, interval: float, log: Path) -> subprocess.Popen[bytes]:
    env = os.environ | {
        "FLEETWARD_NATS_URL": rt.nats_url,
        "FLEETWARD_DATABASE_URL": rt.database_url,
        "FLEETWARD_METRICS_PORT": "0",
        "FLEETWARD_AUTH_DIR": str(rt.settings.auth_dir),
        "FLEETWARD_WATCHDOG_INTERVAL_S": str(interval),
        "FLEETWARD_WATCHDOG_GRACE_S": str(interval),
    }
    with log.open("ab") as out:
        cmd = [sys.executable, "-m", "fleetward.services.cli", "watchdog"]
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


class HarnessError(Exception):
    """The measuring side failed (not the watchdog): the run says nothing about the watchdog."""


async def _read_back(
    rt: Runtime, silent: set[str], interval: float
) -> tuple[list[tuple[EscalationRaised, float]], list[float]]:
    """Every escalation raised, and for each silent agent warned about, the delay from its
    deadline (last heartbeat + 2 intervals) to the warning. Read on a connection of its own,
    so the load generator's connection cannot blind the measurement; a failure to read is the
    harness's, not the watchdog's."""
    nc = await connect_nats(rt.nats_url, creds=creds(rt, HARNESS), name="fleetward-bench-read-back")
    try:
        js = nc.jetstream()
        raised = await _escalations(nc, js)
        warned = {e.agent: at for e, at in raised if e.tier == "warning"}
        delays = []
        for agent in sorted(silent & set(warned)):
            last = await js.get_last_msg("FW_HEARTBEATS", f"fw.hb.{agent}")
            assert last.time is not None
            delays.append(warned[agent] - (last.time.timestamp() + 2 * interval))
    except (TimeoutError, NatsError) as exc:
        raise HarnessError(f"reading the results back failed: {exc!r}") from None
    finally:
        await nc.close()
    return raised, delays


async def _escalations(
    nc: NatsClient, js: JetStreamContext
) -> list[tuple[EscalationRaised, float]]:
    found: list[tuple[EscalationRaised, float]] = []

    def keep(subject: str, data: bytes, seq: int, ns: int) -> None:
        event = admit(subject, data)
        if isinstance(event, EscalationRaised):
            found.append((event, ns / 1e9))

    reader = StreamFollower(nc, js, "FW_EVENTS", ("fw.esc.>",), keep, start_seq=1,
                            name="bench_esc")  # fmt: skip
    done = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(reader.run, done.is_set)
        deadline = time.monotonic() + 60
        while not reader.caught_up and time.monotonic() < deadline:  # noqa: ASYNC110  # polls a flag the reader sets
            await anyio.sleep(0.05)
        done.set()
    if not reader.caught_up:
        raise HarnessError("could not read the escalations back within 60 s")
    return found


async def run_watchdog_bench(
    rt: Runtime,
    agents: int = 100_000,
    interval: float = 10.0,
    seconds: float = 60.0,
    silent_share: float = 0.01,
    *,
    log: Path | None = None,
) -> dict[str, float]:
    """Figures of one run (see the module docstring). ``rt`` must have no other agents."""
    log = log or Path(tempfile.mkdtemp(prefix="fleetward-bench-wd-")) / "watchdog.log"
    names = [f"bench-{i:06d}" for i in range(agents)]
    await _register(rt, names, interval)
    beats = Beats(rt, names, interval)
    silent_at = seconds - 2 * interval - max(2.0, interval / 2)
    if silent_at < interval:
        raise ValueError("seconds must leave room for a silence and its detection")
    step = max(1, round(1 / silent_share))
    silent = set(range(0, agents, step))
    async with anyio.create_task_group() as tg:
        tg.start_soon(beats.run)
        await anyio.sleep(interval)  # every agent has heartbeated once
        started = time.monotonic()
        proc = _start_watchdog(rt, interval, log)
        sampler, sampling = ProcessWatch(proc.pid), anyio.Event()
        tg.start_soon(sampler.sample, sampling, 0.2)
        while "caught up" not in log.read_text():
            if proc.poll() is not None:
                raise SystemExit(f"the watchdog exited:\n{log.read_text()[-3000:]}")
            await anyio.sleep(0.05)
        await anyio.sleep(interval)  # its grace
        ready_s = time.monotonic() - started
        cpu0, t0 = sampler.cpu()[0], time.monotonic()
        await anyio.sleep(silent_at)
        beats.silent = silent
        await anyio.sleep(seconds - silent_at)
        cpu = sampler.cpu()[0] - cpu0
        elapsed = time.monotonic() - t0
        proc.terminate()
        proc.wait(30)
        beats.stopping = True
        await beats.stopped.wait()
        sampling.set()
    silent_names = {names[k] for k in silent}
    raised, delays = await _read_back(rt, silent_names, interval)
    warned = {e.agent for e, _ in raised if e.tier == "warning"}
    return {
        "agents": agents,
        "interval_s": interval,
        "heartbeats_per_s": agents / interval,
        "seconds": round(elapsed, 1),
        "silent": len(silent_names),
        "detected": len(delays),
        "missed": len(silent_names - warned),
        "false_escalations": len({e.agent for e, _ in raised} - silent_names),
        "cpu_seconds": round(cpu, 2),
        "cpu_share_of_one_core": round(cpu / elapsed, 3),
        "peak_rss_mib": round(sampler.peak_rss[0] / 2**20, 1),
        "ready_s": round(ready_s, 1),
        "delay_p50_s": round(percentile(delays, 0.5), 3),
        "delay_p99_s": round(percentile(delays, 0.99), 3),
        "delay_max_s": round(max(delays, default=float("nan")), 3),
        "delay_mean_s": round(statistics.fmean(delays), 3) if delays else float("nan"),
    }


async def _main(args: argparse.Namespace) -> dict[str, float]:
    home = Path(tempfile.mkdtemp(prefix="fleetward-bench-wd-"))
    settings = Settings.from_env({**os.environ, "FLEETWARD_HOME": str(home)})
    async with open_runtime(settings, identity=as_harness(settings), embed=True) as rt:
        figures = await run_watchdog_bench(
            rt, args.agents, args.interval, args.seconds, args.silent_share,
            log=home / "watchdog.log",
        )  # fmt: skip
    shutil.rmtree(home, ignore_errors=True)  # hundreds of MB of heartbeats; kept on failure
    return figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench_watchdog", description=__doc__)
    p.add_argument("--agents", type=int, default=100_000)
    p.add_argument("--interval", type=float, default=10.0)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--silent-share", type=float, default=0.01)
    p.add_argument("--quick", action="store_true", help="5,000 agents, 2 s interval, 15 s")
    args = p.parse_args(argv)
    if args.quick:
        args.agents, args.interval, args.seconds = 5_000, 2.0, 15.0
    figures = anyio.run(_main, args)
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
