"""The auditor wired into the services' process (services/serve.py ``run_services``): ``fleetward
dev`` and ``fleetward auditor`` start it, signed in as svc:audit, with an ``auditor`` check on
/healthz that reports ready, and it seals the chain (``audit.sealed``) each period; SIGTERM
stops the process cleanly."""

from __future__ import annotations

import re
import signal
from pathlib import Path
from subprocess import Popen

import pytest
from nats.js.errors import NotFoundError

from fleetward.schemas import decode
from fleetward.schemas.events import AuditSealed
from fleetward.schemas.streams import EVENTS_STREAM
from fleetward.services.runtime.connect import Runtime
from tests.helpers import wait_for
from tests.integration.test_cli import output, spawn
from tests.integration.test_health import health


async def _port(proc: Popen[bytes], logs: Path) -> int:
    async def port() -> int:
        if proc.poll() is not None:
            raise AssertionError(f"the process exited {proc.returncode}\n{output(logs)}")
        found = re.search(r":(\d+)/metrics", (logs / "stdout").read_text())
        return int(found.group(1)) if found else 0

    return await wait_for(port, 60, "the ready line")


async def _auditor_ready(port: int) -> dict[str, object]:
    async def ready() -> dict[str, object]:
        status, body = await health(port)
        checks = body["checks"]
        assert isinstance(checks, dict)
        auditor = checks.get("auditor")
        return body if status == 200 and isinstance(auditor, dict) and auditor["ok"] else {}

    return await wait_for(ready, 60, "/healthz to report the auditor ready")


async def _sealed(rt: Runtime) -> AuditSealed | None:
    try:
        msg = await rt.js.get_last_msg(EVENTS_STREAM, "fw.audit.*.svc:audit")
    except NotFoundError:
        return None
    event = decode(msg.data or b"")
    return event if isinstance(event, AuditSealed) else None


@pytest.mark.parametrize("command", [["auditor"], ["dev"]])
async def test_the_services_process_runs_the_auditor_ready_on_healthz_and_sealing(
    rt: Runtime, env: dict[str, str], tmp_path: Path, command: list[str]
) -> None:
    logs = tmp_path / command[0]
    settings = {"FLEETWARD_METRICS_PORT": "0", "FLEETWARD_AUDIT_SEAL_S": "1"}
    with spawn(command, {**env, **settings}, logs) as proc:
        port = await _port(proc, logs)
        body = await _auditor_ready(port)
        checks = body["checks"]
        assert isinstance(checks, dict) and "auditor" in checks
        if command == ["dev"]:  # every part of dev runs beside it
            assert {"watchdog", "guard", "projector", "auditor"} <= set(checks)
        sealed = await wait_for(lambda: _sealed(rt), 30, "a seal by svc:audit")
        assert sealed.actor == "svc:audit"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, output(logs)
    assert "Traceback" not in (logs / "stderr").read_text(), output(logs)
