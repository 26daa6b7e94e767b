"""The deployment material is valid: nats-server itself checks the configuration files."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from fleetward.services.api import token
from fleetward.services.auth.store import AuthStore
from fleetward.services.client import FleetClient
from fleetward.services.config import Settings
from fleetward.services.runtime.connect import Runtime
from fleetward.services.runtime.embedded import nats_server_binary
from tests.cluster import node_env
from tests.helpers import agent, creds, http_get, wait_for
from tests.integration.test_cli import output, spawn

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@pytest.mark.parametrize("conf", sorted(p.name for p in (DEPLOY / "nats").glob("*.conf")))
def test_nats_configuration_is_accepted_by_nats_server(conf: str, tmp_path: Path) -> None:
    """With the nats-auth.conf that ``fleetward auth init`` writes beside it (and a cluster
    node's environment: tests/cluster.py starts three of that file)."""
    shutil.copy(DEPLOY / "nats" / conf, tmp_path / conf)
    store = AuthStore(tmp_path / "keys").init()
    (tmp_path / "nats-auth.conf").write_text(store.server_config(tmp_path / "accounts"))
    checked = subprocess.run(
        [nats_server_binary(), "-t", "-c", str(tmp_path / conf)],
        env=os.environ | node_env("fw-1", tmp_path, 14222, 16222, [16222, 16223, 16224]),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr + checked.stdout


# ---- deploy/systemd: the units, checked by systemd and run as they say --------------------------

SYSTEMD = DEPLOY / "systemd"
UNITS = sorted(p.name for p in SYSTEMD.glob("fleetward-*.service"))
EXEC = "/opt/fleetward/.venv/bin/fleetward"
ENV_FILE = "/etc/fleetward/fleetward.env"


def _unit(name: str) -> dict[str, list[str]]:
    """A unit's ``Key=Value`` lines (every section), each key's values in order."""
    keys: dict[str, list[str]] = {}
    for line in (SYSTEMD / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            keys.setdefault(key.strip(), []).append(value.strip())
    return keys


def _assignments(lines: list[str]) -> dict[str, str]:
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def _read_by_fleetward() -> set[str]:
    """The variables ``Settings.from_env`` reads (services/config.py), prefixes with a ``*``."""
    source = (Path(__file__).resolve().parents[2] / "services" / "config.py").read_text()
    return {m if not m.endswith("_") else m + "*" for m in re.findall(r"FLEETWARD_[A-Z_]+", source)}


def test_the_systemd_units_pass_systemd_analyze_and_set_only_what_fleetward_reads(
    tmp_path: Path,
) -> None:
    """``systemd-analyze verify`` (Debian's systemd) on every unit, its program and environment
    file pointed at this checkout's; every variable they set is one Fleetward reads."""
    assert UNITS, "no units in deploy/systemd"
    assert shutil.which("systemd-analyze"), "systemd-analyze (Debian: systemd) is needed"
    fleetward = Path(sys.executable).with_name("fleetward")
    known = _read_by_fleetward()
    shutil.copy(SYSTEMD / "fleetward.env", tmp_path / "fleetward.env")
    for name in UNITS:
        text = (SYSTEMD / name).read_text()
        assert EXEC in text and ENV_FILE in text, name
        text = text.replace(EXEC, str(fleetward)).replace(ENV_FILE, str(tmp_path / "fleetward.env"))
        (tmp_path / name).write_text(text)
        variables = _assignments(_unit(name).get("Environment", []))
        unknown = {
            v for v in variables if v not in known and v.rsplit("_", 1)[0] + "_*" not in known
        }
        assert not unknown, f"{name} sets variables Fleetward does not read: {unknown}"
    file_vars = _assignments((SYSTEMD / "fleetward.env").read_text().splitlines())
    assert set(file_vars) <= known, set(file_vars) - known
    checked = subprocess.run(
        ["systemd-analyze", "verify", *(str(tmp_path / n) for n in UNITS)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert checked.returncode == 0 and not checked.stderr.strip(), checked.stderr + checked.stdout


def _service_env(name: str, settings: Settings, home: Path, keys: AuthStore) -> dict[str, str]:
    """What systemd gives ``name``'s process (its environment file, then its own lines), with
    the servers, folders and ports of this test and the credentials issued to it here. No
    signing keys: the process can act only with the credentials its unit names."""
    assert settings.nats_url and settings.database_url
    env = _assignments((SYSTEMD / "fleetward.env").read_text().splitlines())
    env |= _assignments(_unit(name).get("Environment", []))
    env |= {
        "FLEETWARD_NATS_URL": settings.nats_url,
        "FLEETWARD_DATABASE_URL": settings.database_url,
        "FLEETWARD_HOME": str(home),
        "FLEETWARD_AUTH_DIR": str(home / "no-keys"),
        "FLEETWARD_METRICS_HOST": "127.0.0.1",
        "FLEETWARD_METRICS_PORT": "0",
        "FLEETWARD_API_HOST": "127.0.0.1",
    }
    env.pop("FLEETWARD_STREAM_REPLICAS")  # one nats-server here
    if "FLEETWARD_API_PORT" in env:
        env["FLEETWARD_API_PORT"] = "0"
    for variable, path in list(env.items()):
        if variable.endswith("CREDS"):  # /etc/fleetward/creds/<service>.creds
            env[variable] = str(keys.ensure(f"svc:{Path(path).stem}"))
    return {"PATH": os.environ["PATH"], **env}


async def test_the_services_run_as_their_units_say_with_only_their_own_credentials(
    rt: Runtime, settings: Settings, tmp_path: Path
) -> None:
    """Every unit's program, started with the unit's environment and nothing else (no signing
    keys): each is ready on /readyz, an agent finds a task through the task API and claims it,
    the HTTP API answers, and SIGTERM stops each cleanly."""
    keys = AuthStore(settings.auth_dir)
    procs: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    with contextlib.ExitStack() as stack:
        for name in UNITS:
            argv = _unit(name)["ExecStart"][0].split()
            assert argv[0] == EXEC, name
            logs = tmp_path / name
            env = _service_env(name, settings, tmp_path / "home" / name, keys)
            procs[name] = (stack.enter_context(spawn(argv[1:], env, logs)), logs)
        ports = {name: await _metrics_port(proc, logs) for name, (proc, logs) in procs.items()}
        for name, port in ports.items():
            logs = procs[name][1]
            await wait_for(lambda port=port: _ready(port), 60, f"{name} ready\n{output(logs)}")
        async with await FleetClient.connect(rt.nats_url, creds(rt, "user:ops")) as ops:
            await ops.create_task("deploy-1", title="run as the units say", project="p")
        worker = await agent(rt, "deploy-agent")
        try:
            claim = await wait_for(worker.claim_next, 30, "the task API to offer deploy-1")
            assert claim.task == "deploy-1"
        finally:
            await worker.close()
        api_logs = procs["fleetward-api.service"][1]
        api_port = re.findall(r"http://127\.0\.0\.1:(\d+)/", (api_logs / "stdout").read_text())
        key = token.load_key(tmp_path / "home" / "fleetward-api.service" / "no-keys")
        viewer = token.issue(key, "user:ops", time.time())
        headers = {"authorization": f"Bearer {viewer}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port[0]}") as http:

            async def held() -> bool:
                task = await http.get("/api/v1/tasks/deploy-1", headers=headers)
                assert task.status_code == 200, task.text
                return bool(task.json()["assignee"] == "deploy-agent")

            await wait_for(held, 30, "the API to show deploy-1 held by deploy-agent")
            # writes: as the person, with their credentials copied to the API's host
            api_store = AuthStore(tmp_path / "home" / "fleetward-api.service" / "no-keys")
            operator = token.issue(key, "user:ops", time.time(), role="operator")
            headers = {"authorization": f"Bearer {operator}"}
            pause = await http.post("/api/v1/agents/deploy-agent/pause", headers=headers, json={})
            assert pause.status_code == 403, pause.text  # no credentials of user:ops there yet
            assert str(api_store.creds_path("user:ops")) in pause.json()["error"]
            api_store.creds_path("user:ops").parent.mkdir(parents=True)
            shutil.copy(creds(rt, "user:ops"), api_store.creds_path("user:ops"))
            pause = await http.post("/api/v1/agents/deploy-agent/pause", headers=headers, json={})
            assert pause.status_code == 200, pause.text
        for proc, _logs in procs.values():
            proc.send_signal(signal.SIGTERM)
        for name, (proc, logs) in procs.items():
            assert proc.wait(30) == 0, f"{name}\n{output(logs)}"
            assert "Traceback" not in (logs / "stderr").read_text(), f"{name}\n{output(logs)}"


async def _metrics_port(proc: subprocess.Popen[bytes], logs: Path) -> int:
    async def port() -> int:
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode}\n{output(logs)}")
        found = re.search(r":(\d+)/metrics", (logs / "stdout").read_text())
        return int(found.group(1)) if found else 0

    return await wait_for(port, 60, f"the ready line in {logs}")


async def _ready(port: int) -> bool:
    status, body = await http_get(port, "/readyz")
    print(body)  # the last answer is in the report of a failure
    return status == 200
