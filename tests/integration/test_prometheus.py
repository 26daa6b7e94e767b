"""Fleetward as SREs see it through Prometheus and Grafana (deploy/prometheus, deploy/grafana):

- promtool accepts the scrape configuration and the alert rules, and the rules' unit tests pass;
- a real Prometheus on 127.0.0.1 scrapes a running ``fleetward projector``, loads the alert
  rules, answers a query about a Fleetward metric and accepts every dashboard query;
- every metric name the Grafana dashboard uses is served by a live projector or watchdog.

Prometheus and promtool come from the Debian package ``prometheus`` (``make promtool``).
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from fleetward.schemas import new_id
from fleetward.schemas.events import BudgetSet, Heartbeat
from fleetward.services.jetstream.publish import publish, publish_many
from fleetward.services.runtime.connect import Runtime
from tests.helpers import envelope, now, wait_for
from tests.integration.test_cli import (
    checkpoints,
    http_get,
    output,
    publish_fleet,
    spawn,
    stream_positions,
)
from tests.integration.test_kpis import history
from tests.integration.test_watchdog import free_port

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "fleetward.json"
README = ROOT / "README.md"
SYNTHETIC = frozenset({"up"})  # series Prometheus makes itself for every target


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise AssertionError(f"{name} is missing: `make promtool` installs it (Debian prometheus)")
    return path


# ---- promtool -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("check", "config", "prometheus.yml"),
        ("check", "rules", "alerts.yml"),
        ("test", "rules", "alerts_test.yml"),
    ],
    ids=" ".join,
)
def test_promtool_accepts_the_prometheus_material(args: tuple[str, ...]) -> None:
    done = subprocess.run(
        [tool("promtool"), *args],
        cwd=PROMETHEUS_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def alert_names() -> list[str]:
    return re.findall(r"^\s*- alert: (\w+)\s*$", (PROMETHEUS_DIR / "alerts.yml").read_text(), re.M)


def test_every_alert_has_a_firing_unit_test_and_a_runbook_line() -> None:
    alerts = alert_names()
    assert {
        "FleetwardProjectionLagHigh",
        "FleetwardDeadLetters",
        "FleetwardServiceDown",
        "FleetwardAgentsOffline",
        "FleetwardCriticalEscalationsOpen",
        "FleetwardBudgetNearlyExhausted",
        "FleetwardBudgetExhausted",
    } <= set(alerts)
    tests = (PROMETHEUS_DIR / "alerts_test.yml").read_text()
    # a case that fires: "alertname: X" followed (before the next case) by an expected alert
    cases = re.split(r"^\s*- alertname: ", tests, flags=re.M)[1:]
    firing = {case.split()[0] for case in cases if "exp_labels:" in case}
    quiet = {case.split()[0] for case in cases if re.search(r"exp_alerts: \[\]", case)}
    section = README.read_text().split("## For SREs: Prometheus and Grafana", 1)
    assert len(section) == 2, "README has no 'For SREs: Prometheus and Grafana' section"
    for alert in alerts:
        assert alert in firing, f"{alert} has no unit test in which it fires"
        assert alert in quiet, f"{alert} has no unit test in which it stays quiet"
        assert re.search(rf"^\| `{alert}` \|.+\|.+\|$", section[1], re.M), (
            f"{alert} has no runbook line (| `{alert}` | meaning | what to do |) in README"
        )


# ---- metric names in PromQL and in /metrics -------------------------------------------------

_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                       "and", "or", "unless", "offset", "inf", "nan"})  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are neither a function or
    aggregation (followed by "("), nor a keyword, nor a label name in a grouping clause, in a
    matcher or a range."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values
    text = re.sub(r"\{[^}]*\}", "", text)  # matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for found in re.finditer(r"(?<![\w.])([A-Za-z_:][A-Za-z0-9_:]*)\s*(\()?", text):
        name, call = found.group(1), found.group(2)
        if call is None and name.lower() not in _KEYWORDS:
            names.add(name)
    return names


def test_metric_names_are_read_from_promql() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (le, projection) "
        "(rate(fleetward_batch_seconds_bucket[5m])))"
        ' / on (projection) group_left sum without (instance) (fleetward_x{a="b(c)", d=~"e|f"})'
        ' or max(fleetward_agents{status!="retired"} offset 1h) > bool 0.1 and time() - up'
    )
    assert metric_names(expr) == {"fleetward_batch_seconds_bucket", "fleetward_x",
                                  "fleetward_agents", "up"}  # fmt: skip


def dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    exprs: list[str] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            exprs.extend(t["expr"] for t in panel.get("targets", []) if t.get("expr"))
            walk(panel.get("panels", []))

    walk(board["panels"])
    return exprs


def served_names(exposition: str) -> set[str]:
    """The names of the samples in a /metrics answer (a family without samples is not served)."""
    return {
        line.split("{", 1)[0].split(" ", 1)[0]
        for line in exposition.splitlines()
        if line and not line.startswith("#")
    }


def metrics_port(proc: subprocess.Popen[bytes], logs: Path) -> Callable[[], Awaitable[int]]:
    async def port() -> int:  # 0 until the ready line is out
        if proc.poll() is not None:
            raise AssertionError(f"fleetward exited {proc.returncode}\n{output(logs)}")
        found = re.search(r"metrics on :(\d+)/metrics", (logs / "stdout").read_text())
        return int(found.group(1)) if found else 0

    return port


def budget_of(scope: str, scope_id: str, window: str, limit_usd: float) -> BudgetSet:
    return BudgetSet(id=new_id(), actor="user:sre", at=now(), budget=f"b-{scope_id}-{window}",
                     scope=scope, scope_id=scope_id, window=window, limit_usd=limit_usd,
                     limit_tokens=1000)  # fmt: skip


async def test_every_dashboard_metric_is_served_by_fleetward(
    rt: Runtime, env: dict[str, str], tmp_path: Path
) -> None:
    exprs = dashboard_exprs()
    wanted = set().union(*(metric_names(e) for e in exprs))
    assert len(exprs) >= 20 and len(wanted) >= 20, (len(exprs), sorted(wanted))
    # a fleet, a dead letter, budgets, and finished runs and reviews (the KPI ratios): every
    # family the dashboard shows has samples
    await publish_fleet(rt, 6, ticks=3)
    await rt.js.publish("fw.agent.sim-000.sim-000", b"{not json")
    await publish_many(rt.js, history())
    target = await stream_positions(rt)
    env = {**env, "FLEETWARD_METRICS_PORT": "0", "FLEETWARD_KPI_GAUGES_S": "1"}
    with (
        spawn(["projector"], env, tmp_path / "projector") as projector,
        spawn(["watchdog"], env, tmp_path / "watchdog") as watchdog,
    ):
        ports = [
            await wait_for(metrics_port(projector, tmp_path / "projector"), 30, "the projector"),
            await wait_for(metrics_port(watchdog, tmp_path / "watchdog"), 30, "the watchdog"),
        ]

        async def caught_up() -> bool:  # at least: the outbox and the watchdog publish too
            done = await checkpoints(rt)
            return all(done.get(p, 0) >= seq for p, seq in target.items())

        await wait_for(caught_up, 30, "the projector to apply the fleet")
        # heartbeat time while the projector runs (FW_HEARTBEATS keeps each agent's last one
        # only, so a burst published before it started may leave no interval): the KPI
        # utilization ratio of sim-001's team has a denominator
        for _ in range(2):
            await publish(rt.js, Heartbeat(**envelope("sim-001"), agent="sim-001", status="busy"))
            await anyio.sleep(0.5)
        # a budget of every scope: the budget gauges show it at the next reading of the views
        for scope, scope_id in (("team", "research"), ("agent", "sim-001"), ("project", "p"),
                                ("org", "acme")):  # fmt: skip
            await publish(rt.js, budget_of(scope, scope_id, "day", 5.0))
        missing: set[str] = set()
        served: list[set[str]] = []

        async def all_served() -> bool:
            nonlocal missing, served
            served = [served_names((await http_get(port, "/metrics"))[1]) for port in ports]
            missing = wanted - SYNTHETIC - set().union(*served)
            return not missing

        with contextlib.suppress(AssertionError):
            await wait_for(all_served, 30, "every dashboard metric")
        assert not missing, f"the dashboard uses metrics Fleetward does not serve: {missing}"
        unknown = {n for n in wanted - SYNTHETIC if not n.startswith("fleetward_")}
        assert not unknown, unknown
        # the fleet gauges come from the projector process only, not from the watchdog
        assert "fleetward_agents" in served[0] and "fleetward_agents" not in served[1]


# ---- a real scrape ---------------------------------------------------------------------------


def _get_json(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as err:  # a refused query: Prometheus says why, in JSON
        with err:
            body = err.read()
        try:
            return json.loads(body)
        except ValueError:  # not ready yet ("Service Unavailable" in plain text)
            return None


async def prom_get(port: int, path: str, **params: str) -> Any:
    """GET a Prometheus API path; None while Prometheus does not answer."""
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    url = f"http://127.0.0.1:{port}{path}{query}"
    try:
        return await anyio.to_thread.run_sync(_get_json, url)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


@contextlib.contextmanager
def prometheus(folder: Path, job: str, target_port: int) -> Iterator[int]:
    """A Prometheus on a free port of 127.0.0.1 scraping ``target_port`` every second, with the
    alert rules of deploy/prometheus loaded; stopped at exit."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROMETHEUS_DIR / "alerts.yml", folder / "alerts.yml")
    (folder / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "rule_files: [alerts.yml]\n"
        "scrape_configs:\n"
        f"  - job_name: {job}\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{target_port}']}}]\n"
    )
    port = free_port()
    args = [
        tool("prometheus"),
        f"--config.file={folder / 'prometheus.yml'}",
        f"--web.listen-address=127.0.0.1:{port}",
        f"--storage.tsdb.path={folder / 'data'}",
    ]
    with (folder / "prometheus.log").open("wb") as log:
        proc = subprocess.Popen(args, cwd=folder, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_a_real_prometheus_scrapes_fleetward_and_answers_queries(
    rt: Runtime, env: dict[str, str], tmp_path: Path
) -> None:
    await publish_fleet(rt, 6, ticks=3)
    target = (await stream_positions(rt))["tasks"]
    assert target > 0
    logs = tmp_path / "projector"
    with spawn(["projector"], {**env, "FLEETWARD_METRICS_PORT": "0"}, logs) as projector:
        port = await wait_for(metrics_port(projector, logs), 30, "the projector's ready line")
        with prometheus(tmp_path / "prometheus", "fleetward-projector", port) as prom:
            log = tmp_path / "prometheus" / "prometheus.log"
            seen: Any = None

            query = 'fleetward_projection_checkpoint{projection="tasks"}'

            async def checkpoint_scraped() -> bool:
                nonlocal seen
                seen = await prom_get(prom, "/api/v1/query", query=query)
                result = (seen or {}).get("data", {}).get("result", [])
                return bool(result) and float(result[0]["value"][1]) == target

            with contextlib.suppress(AssertionError):
                await wait_for(checkpoint_scraped, 30, "Prometheus to scrape the checkpoint")
            assert seen is not None, f"Prometheus never answered:\n{log.read_text()[-3000:]}"
            result = seen.get("data", {}).get("result", [])
            assert result, f"no fleetward_projection_checkpoint in Prometheus: {seen}"
            sample = result[0]
            assert sample["metric"]["job"] == "fleetward-projector"
            assert sample["metric"]["instance"] == f"127.0.0.1:{port}"
            assert float(sample["value"][1]) == target, (sample, target)

            # the alert rules load and evaluate cleanly against real data
            rules: list[dict[str, Any]] = []

            async def rules_evaluated() -> bool:
                nonlocal rules
                answer = await prom_get(prom, "/api/v1/rules")
                groups = (answer or {}).get("data", {}).get("groups", [])
                rules = [r for g in groups for r in g["rules"]]
                return bool(rules) and all(r.get("health") == "ok" for r in rules)

            with contextlib.suppress(AssertionError):
                await wait_for(rules_evaluated, 15, "the alert rules to be evaluated")
            assert sorted(r["name"] for r in rules) == sorted(alert_names())
            assert all(r.get("health") == "ok" for r in rules), rules

            # every dashboard query is PromQL that Prometheus accepts
            for expr in dashboard_exprs():
                answer = await prom_get(prom, "/api/v1/query", query=expr)
                assert answer is not None and answer["status"] == "success", (expr, answer)
