"""Named health checks (services/metrics/health.py) and GET /healthz with them: 200 only when
every check passes, and every verdict with its reason in the body."""

from __future__ import annotations

import anyio
import msgspec
import pytest

from fleetward.services.metrics.health import HealthChecks
from fleetward.services.metrics.http import serve_http
from tests.helpers import http_get


async def test_healthz_answers_every_checks_verdict_and_fails_if_any_fails() -> None:
    checks = HealthChecks()
    judging = {"ok": True}
    checks.register("nats", lambda: (True, "connected"))
    checks.register("watchdog", lambda: (judging["ok"], "judging" if judging["ok"] else "stuck"))
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve_http, "127.0.0.1", 0, checks)
        status, body = await http_get(port, "/healthz")
        assert status == 200
        assert msgspec.json.decode(body) == {"ok": True, "checks": {
            "nats": {"ok": True, "reason": "connected"},
            "watchdog": {"ok": True, "reason": "judging"}}, "problems": []}  # fmt: skip
        judging["ok"] = False
        status, body = await http_get(port, "/healthz")
        assert status == 503
        assert msgspec.json.decode(body)["checks"]["watchdog"] == {"ok": False, "reason": "stuck"}
        assert msgspec.json.decode(body)["problems"] == ["watchdog: stuck"]
        for path in ("/readyz", "/livez"):  # readiness: the same answer; liveness: alive
            status, _ = await http_get(port, path)
            assert status == (503 if path == "/readyz" else 200)
        tg.cancel_scope.cancel()


def test_a_check_that_raises_fails_with_its_error_and_names_are_unique() -> None:
    checks = HealthChecks()
    assert checks.report().ok and checks()  # none: healthy

    def broken() -> tuple[bool, str]:
        raise RuntimeError("no state yet")

    checks.register("broken", broken)
    report = checks.report()
    assert not report.ok and not checks()
    assert report.checks == {"broken": (False, "the check failed: RuntimeError: no state yet")}
    with pytest.raises(ValueError, match="registered already"):
        checks.register("broken", lambda: (True, ""))


async def test_a_plain_health_function_still_serves_the_old_body() -> None:
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve_http, "127.0.0.1", 0, lambda: False)
        assert await http_get(port, "/healthz") == (503, '{"ok":false}')
        tg.cancel_scope.cancel()
