"""The operator CLI as operators run it: subprocesses against real nats-server and Postgres.

- ``fleetward projector`` serves /healthz and /metrics and exits 0 on SIGTERM with every
  checkpoint at the stream position (nothing half-done);
- the read commands show what the projections hold;
- ``fleetward dev --simulate N`` (what ``make run`` runs) starts its own servers and stops them
  on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import anyio
import msgspec
import psutil
import pytest
from nats.js.errors import NotFoundError

from fleetward import projections
from fleetward.services.cli.main import main
from fleetward.services.jetstream.publish import publish_many
from fleetward.services.projector.consumers import by_stream, consumer_filter, runner_durable
from fleetward.services.runtime.connect import Runtime
from fleetward.services.simulate import Fleet
from tests.helpers import http_get, now, project_all, wait_for

ROOT = Path(__file__).resolve().parents[2]
CLI = (sys.executable, "-m", "fleetward.services.cli")


async def fleetward(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """Run ``fleetward ARGS`` to the end; its exit code, stdout and stderr."""
    with anyio.fail_after(60):
        done = await anyio.run_process([*CLI, *args], cwd=ROOT, env=env, check=False)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def fleetward_ok(env: dict[str, str], *args: str) -> str:
    code, out, err = await fleetward(env, *args)
    assert code == 0, f"fleetward {' '.join(args)} exited {code}:\n{out}\n{err}"
    assert "Traceback" not in err, err
    return out


async def publish_fleet(rt: Runtime, size: int, ticks: int, seed: int = 7) -> int:
    fleet = Fleet(size, seed=seed)
    start = now() - timedelta(seconds=ticks)
    events = fleet.start(start)
    for i in range(1, ticks + 1):
        events += fleet.tick(start + timedelta(seconds=i))
    return await publish_many(rt.js, events)


async def stream_positions(
    rt: Runtime, running: Iterable[projections.Projection] = projections.ALL
) -> dict[str, int]:
    """Per projection of ``running``, the stream sequence of the last message its runner's
    consumer delivers: the stream's last when the runner reads the whole stream, else the last
    on its subject."""
    out: dict[str, int] = {}
    for group in by_stream(running):
        seqs = [0]  # a subject that holds nothing yet (escalations) stays at 0
        filters = consumer_filter(*group)
        for subject in filters:
            with contextlib.suppress(NotFoundError):
                seqs.append((await rt.js.get_last_msg(group[0].stream, subject)).seq or 0)
        if not filters:
            seqs.append((await rt.js.stream_info(group[0].stream)).state.last_seq)
        for p in group:
            out[p.name] = max(seqs)
    return out


async def checkpoints(rt: Runtime) -> dict[str, int]:
    async with rt.pool.acquire() as conn:
        rows = await conn.fetch("SELECT projection, checkpoint FROM fleet.projections")
    return {r["projection"]: int(r["checkpoint"]) for r in rows}


# --- the projector service ------------------------------------------------------------------


@contextlib.contextmanager
def spawn(args: list[str], env: dict[str, str], logs: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A fleetward subprocess with stdout/stderr in ``logs``; killed if still running at exit."""
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / "stdout").open("wb") as out, (logs / "stderr").open("wb") as err:
        proc = subprocess.Popen([*CLI, *args], cwd=ROOT, env=env, stdout=out, stderr=err)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def output(logs: Path) -> str:
    return f"stdout:\n{(logs / 'stdout').read_text()}\nstderr:\n{(logs / 'stderr').read_text()}"


async def test_projector_serves_health_and_metrics_and_stops_cleanly_on_sigterm(
    rt: Runtime, env: dict[str, str], tmp_path: Path
) -> None:
    logs = tmp_path / "projector"
    with spawn(["projector"], {**env, "FLEETWARD_METRICS_PORT": "0"}, logs) as proc:

        async def metrics_port() -> int:  # 0 until the ready line is out
            if proc.poll() is not None:
                raise AssertionError(f"the projector exited {proc.returncode}\n{output(logs)}")
            found = re.search(r"metrics on :(\d+)/metrics", (logs / "stdout").read_text())
            return int(found.group(1)) if found else 0

        port = await wait_for(metrics_port, 30, "the projector's ready line")
        names = ", ".join(p.name for p in projections.ALL)
        assert f"projector running ({names})" in (logs / "stdout").read_text()

        async def healthy() -> bool:
            status, body = await http_get(port, "/healthz")
            return status == 200 and msgspec.json.decode(body) == {"ok": True, "checks": {
                "nats": {"ok": True, "reason": "connected"},
                "projector": {"ok": True, "reason": "committing"},
                "outbox": {"ok": True, "reason": "0 waiting"},
                "task_api": {"ok": True, "reason": "answering fw.api.*"},
            }, "problems": []}  # fmt: skip

        await wait_for(healthy, 30, "/healthz to answer 200")

        sent = await publish_fleet(rt, 10, ticks=4)
        assert sent > 10
        target = await stream_positions(rt)
        events_last = (await rt.js.stream_info("FW_EVENTS")).state.last_seq
        heartbeats_last = (await rt.js.stream_info("FW_HEARTBEATS")).state.last_seq
        assert max(target["agents"], target["tasks"]) == events_last
        assert target["utilization"] == heartbeats_last

        async def caught_up() -> bool:
            return await checkpoints(rt) == target

        await wait_for(caught_up, 30, f"checkpoints to reach {target}")

        status, body = await http_get(port, "/metrics")
        assert status == 200
        assert "fleetward_events_processed_total{" in body
        assert "fleetward_projection_checkpoint{" in body
        assert f'fleetward_projection_checkpoint{{projection="tasks"}} {target["tasks"]}.0' in body

        proc.send_signal(signal.SIGTERM)
        try:
            code = await anyio.to_thread.run_sync(proc.wait, 15)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"no exit within 15 s of SIGTERM\n{output(logs)}") from None
        assert code == 0, output(logs)
        assert "Traceback" not in (logs / "stderr").read_text(), output(logs)

    # Nothing half-done: each checkpoint is the stream position, and each consumer has
    # acknowledged exactly up to it, so a restart neither skips nor re-applies anything.
    assert await checkpoints(rt) == target
    for p in projections.ALL:

        async def acked(p: projections.Projection = p) -> bool:
            info = await rt.js.consumer_info(p.stream, runner_durable(p, projections.ALL))
            floor = info.ack_floor.stream_seq if info.ack_floor else None
            return floor == target[p.name] and info.num_ack_pending == 0

        await wait_for(acked, 5, f"{p.name}'s consumer to acknowledge up to its checkpoint")


# --- the read commands ----------------------------------------------------------------------


async def test_read_commands_show_the_projected_fleet(rt: Runtime, env: dict[str, str]) -> None:
    await publish_fleet(rt, 8, ticks=5, seed=3)
    await project_all(rt)
    async with rt.pool.acquire() as conn:
        agents = await conn.fetch("SELECT agent_id, name, team FROM fleet.agents ORDER BY 1")
        tasks = await conn.fetch("SELECT task_id, status, assignee FROM fleet.tasks ORDER BY 1")
        cost_total = await conn.fetchval(
            "SELECT coalesce(sum(cost_usd), 0) FROM fleet.spend_daily WHERE agent_id = 'sim-001'"
        )
    assert len(agents) == 8
    assert tasks

    status = await fleetward_ok(env, "status")
    assert "agents 8 (" in status
    assert f"tasks {len(tasks)} (" in status
    marks = await checkpoints(rt)
    for name, checkpoint in marks.items():
        assert re.search(rf"{name}\s.*\s{checkpoint}\s", status), (name, checkpoint, status)

    listed = await fleetward_ok(env, "agents")
    for agent in agents:
        assert agent["agent_id"] in listed
    assert "last_seen" in listed and "current_task" in listed  # the views' column names

    board = await fleetward_ok(env, "tasks")
    for task in tasks:
        assert task["task_id"] in board

    done = await fleetward_ok(env, "tasks", "--status", "done")
    for task in tasks:
        assert (task["task_id"] in done) == (task["status"] == "done"), (task, done)

    detail = await fleetward_ok(env, "agent", "sim-001")
    assert "sim-001 Agent sim-001" in detail
    assert agents[1]["team"] in detail
    last_seen = re.search(r"^last seen\s+(.+)$", detail, re.MULTILINE)
    assert last_seen and "never" not in last_seen.group(1), detail
    cost = rf"^cost\s+\$\d+\.\d{{4}} today, \$\d+\.\d{{4}} this month, \${cost_total:.4f} in all"
    assert re.search(cost, detail, re.M), detail
    holding = ("in_progress", "blocked")
    held = sorted(
        t["task_id"] for t in tasks if t["assignee"] == "sim-001" and t["status"] in holding
    )
    holds = re.search(r"^holds\s+(.+) \(the task board\)$", detail, re.M)
    assert holds and holds.group(1) == (", ".join(held) or "no task"), detail

    code, _, err = await fleetward(env, "agent", "nope")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, (code, err)
    assert lines[0] == "fleetward: error: no agent 'nope' in the registry"
    assert "showing" not in listed  # every agent: not cut off


def in_process(args: tuple[str, ...]) -> str:
    """Run ``fleetward ARGS`` in this process (its own event loop: call it in a thread); its
    stdout. Fails unless it exits 0."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(args))
    assert code == 0, f"fleetward {' '.join(args)} exited {code}"
    return out.getvalue()


async def test_read_commands_as_json_for_scripts(
    rt: Runtime, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every read command's ``--json``: one document, the views' column names as keys (an
    agent's id ``agent_id``, a task's ``task_id``), money as decimal strings, times RFC 3339."""
    await publish_fleet(rt, 8, ticks=5, seed=3)
    await project_all(rt)
    async with rt.pool.acquire() as conn:
        tasks = await conn.fetch("SELECT task_id, status FROM fleet.tasks ORDER BY 1")
        spend = await conn.fetchval("SELECT sum(cost_usd) FROM fleet.spend_daily")
    marks = await checkpoints(rt)
    commands = {
        "agents": ("agents", "--json", "--limit", "3"),
        "tasks": ("tasks", "--json"),
        "board": ("tasks", "--board", "--json", "--limit", "1"),
        "show": ("tasks", "show", tasks[0]["task_id"], "--json"),
        "status": ("status", "--json"),
        "agent": ("agent", "sim-001", "--json"),
        "projections": ("projections", "--json"),
        "escalations": ("escalations", "--all", "--json"),
        "approvals": ("approvals", "--json"),
        "policies": ("policies", "show", "--json"),
        "budgets": ("budgets", "--json"),
        "roles": ("people", "roles", "--json"),
    }
    docs: dict[str, Any] = {}
    for key, value in env.items():  # the CLI in this process (a subprocess each: 2 s of CPU)
        if key.startswith("FLEETWARD_"):
            monkeypatch.setenv(key, value)
    for name, args in commands.items():
        out = await anyio.to_thread.run_sync(in_process, args)
        assert out.count("\n") == 1, out  # one document, one line
        docs[name] = json.loads(out)

    agents = docs["agents"]
    assert (len(agents["rows"]), agents["total"], agents["truncated"]) == (3, 8, True)
    first = agents["rows"][0]
    assert set(first) >= {"agent_id", "team", "status", "state", "current_task", "last_seen",
                          "cost_today"}  # fmt: skip
    assert isinstance(first["cost_today"], str) and Decimal(first["cost_today"]) >= 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", first["last_seen"])
    assert sorted(r["task_id"] for r in docs["tasks"]["rows"]) == [t["task_id"] for t in tasks]
    assert (docs["tasks"]["total"], docs["tasks"]["truncated"]) == (len(tasks), False)
    for status, column in docs["board"]["statuses"].items():
        assert column["total"] == sum(1 for t in tasks if t["status"] == status)
        assert len(column["rows"]) == min(1, column["total"])
    story = docs["show"]
    assert story["task"]["task_id"] == tasks[0]["task_id"]
    assert story["history"][0]["type"] == "task.created" and story["history"][0]["applied"]
    assert story["history"][0]["event"]["task"] == tasks[0]["task_id"]
    summary = docs["status"]["summary"]
    assert sum(summary["agents"].values()) == 8 and sum(summary["tasks"].values()) == len(tasks)
    assert Decimal(summary["spend_today"]) == spend
    assert {r["projection"]: r["checkpoint"] for r in docs["status"]["projections"]} == marks
    assert docs["projections"]["rows"] == docs["status"]["projections"]
    assert docs["agent"]["agent_id"] == "sim-001" and "cost_total" in docs["agent"]
    for name in ("escalations", "approvals", "policies", "budgets"):
        assert (docs[name]["rows"], docs[name]["total"]) == ([], 0), docs[name]
    # a table cut off says so, and how many there are in all
    cut = await anyio.to_thread.run_sync(in_process, ("agents", "--limit", "3"))
    assert "showing 3 of 8 (--limit N for more)" in cut
    board = await anyio.to_thread.run_sync(in_process, ("tasks", "--board", "--limit", "1"))
    crowded = any(sum(t["status"] == s for t in tasks) > 1 for s in {t["status"] for t in tasks})
    assert ("showing the first 1 of each status" in board) == crowded, board
    roles = docs["roles"]["rows"]  # the test's admins (tests/helpers.py grant_test_admins)
    assert roles and all(set(r) == {"person", "roles"} and r["roles"] for r in roles), roles


async def test_rebuild_spend_gives_the_same_rows(rt: Runtime, env: dict[str, str]) -> None:
    await publish_fleet(rt, 8, ticks=5, seed=3)
    await project_all(rt)

    async def spend_rows() -> list[tuple[Any, ...]]:
        async with rt.pool.acquire() as conn:
            rows = await conn.fetch("SELECT * FROM fleet.spend_daily ORDER BY agent_id, day")
        return [tuple(r.values()) for r in rows]

    before = await spend_rows()
    assert before
    out = await fleetward_ok(env, "projections", "rebuild", "spend")
    reached = (await stream_positions(rt, [projections.BY_NAME["spend"]]))["spend"]
    assert f"spend rebuilt up to stream sequence {reached}" in out
    assert await spend_rows() == before
    assert (await checkpoints(rt))["spend"] == reached


# --- fleetward dev (make run) ---------------------------------------------------------------


def _read_lines(stream: IO[bytes], lines: queue.Queue[str | None]) -> None:
    for raw in stream:
        lines.put(raw.decode(errors="replace"))
    lines.put(None)


def _next_line_with(
    lines: queue.Queue[str | None], text: str, deadline: float, seen: list[str]
) -> str:
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no line with {text!r} in time; output so far:\n{''.join(seen)}")
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            continue
        if line is None:
            raise AssertionError(f"output ended before {text!r}:\n{''.join(seen)}")
        seen.append(line)
        if text in line:
            return line


def _embedded_nats(dev: psutil.Process, store: Path) -> psutil.Process:
    for child in dev.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if child.name() == "nats-server" and str(store) in " ".join(child.cmdline()):
                return child
    raise AssertionError(f"no nats-server with its data in {store} under fleetward dev")


def _gone(process: psutil.Process) -> bool:
    try:
        return bool(process.status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def _status_from(folder: Path, env: dict[str, str]) -> Any:
    """``fleetward status --json`` run in ``folder`` (made here) with ``env``: its document."""
    folder.mkdir()
    found = subprocess.run([*CLI, "status", "--json"], cwd=folder, env=env, capture_output=True,
                           timeout=60, check=False)  # fmt: skip
    assert found.returncode == 0, found.stderr.decode()
    return json.loads(found.stdout)


@pytest.mark.slow
def test_dev_runs_embedded_and_stops_on_ctrl_c(server_home: Path) -> None:
    """``fleetward dev`` without FLEETWARD_HOME keeps its data in the per-user state folder
    (here XDG_STATE_HOME's), where the other commands find it from any folder."""
    home = server_home / "state" / "fleetward"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETWARD_")}
    env["XDG_STATE_HOME"] = str(server_home / "state")
    proc = subprocess.Popen(
        [*CLI, "dev", "--simulate", "5"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True)
    reader.start()
    seen: list[str] = []
    nats_server: psutil.Process | None = None
    postmaster: psutil.Process | None = None
    try:
        deadline = time.monotonic() + 45
        _next_line_with(lines, "Fleetward is running", deadline, seen)
        nats_line = _next_line_with(lines, "NATS", deadline, seen)
        assert f"(embedded; data in {home / 'nats'})" in nats_line
        status = _next_line_with(lines, "agents 5", deadline, seen)
        assert "tasks" in status
        assert (home / "runtime.json").exists()
        assert sum(_status_from(server_home / "elsewhere", env)["summary"]["agents"].values()) == 5
        nats_server = _embedded_nats(psutil.Process(proc.pid), home / "nats")
        postmaster = psutil.Process(int((home / "pg" / "postmaster.pid").read_text().split()[0]))

        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(20)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"no exit within 20 s of SIGINT:\n{''.join(seen)}") from None
        reader.join(5)
        with contextlib.suppress(queue.Empty):
            while (line := lines.get_nowait()) is not None:
                seen.append(line)
        assert code == 0, "".join(seen)
        assert "Traceback" not in "".join(seen), "".join(seen)
        assert (home / "nats").is_dir()
        deadline = time.monotonic() + 10
        while not (_gone(nats_server) and _gone(postmaster)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(nats_server), f"the embedded nats-server {nats_server.pid} still runs"
        assert _gone(postmaster), f"the embedded Postgres {postmaster.pid} still runs"
        assert not (home / "runtime.json").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for server in (nats_server, postmaster):
            if server is not None and not _gone(server):
                server.kill()
        proc.stdout.close()
        reader.join(5)
