"""KPI drift (issue 16, part 3): an agent whose KPIs moved beyond a threshold, for the worse,
from its previous version after a version change, or else from its own previous window. Pure:
the service reads the sums (``watchdog_kpi_sums``, ``watchdog_kpi_agents``) every
``drift_every_s`` and hands them here with the UTC day of "now".

- Basis: ``version`` when the agent's current version was put in force within the last 14 days
  and it ran another one before: the current version against the previous one (the version last
  in force before it, ``fleet.agent_versions.changed_at``), each over the last 30 days (as
  ``fleet.kpi_versions``). Otherwise ``window``: the last 7 UTC days against the 7 before them,
  all versions together.
- KPIs judged: ``success_rate`` (runs finished that succeeded; both sides need
  ``drift_min_runs`` runs) down by ``drift_success_drop`` or more; ``cost_per_task_usd`` (cost
  over approved deliverables; both sides need ``drift_min_reviews`` tasks done) up by the share
  ``drift_cost_rise`` or more; ``rework_rate`` (reviewed deliverables rejected; both sides need
  ``drift_min_reviews`` reviews) up by ``drift_rework_rise`` or more.
- One escalation ``kpi_drift`` (warning) per agent, KPI and version change (id ``kpi-<20 hex>``
  of agent, KPI, both versions), or per agent, KPI and window (the first day of the window), first
  raise compare-and-set on an empty subject: replicas and restarts raise it once; one resolved
  is not raised again. Its message and evidence name the KPI, both values, their basis and both
  versions. A window drift is not raised while another ``kpi_drift`` of the agent is open.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Final, Protocol

from fleetward.services.config import WatchdogSettings
from fleetward.services.watchdog.core.incidents import (
    KPI_DRIFT,
    Escalations,
    Plan,
    Publish,
    escalation_id,
    raised_event,
)

VERSION_DAYS: Final = 14  # a version put in force this recently is judged against the previous
_ZERO = Decimal(0)


class Row(Protocol):
    """A row read from Postgres (an ``asyncpg.Record``), by column name."""

    def __getitem__(self, column: str, /) -> Any: ...


@dataclass(frozen=True, slots=True)
class Sums:
    """What one side of a comparison adds up to."""

    runs: int = 0
    succeeded: int = 0
    cost_usd: Decimal = _ZERO
    approved: int = 0
    reviewed: int = 0
    rejected: int = 0

    def __add__(self, other: Sums) -> Sums:
        return Sums(
            self.runs + other.runs, self.succeeded + other.succeeded,
            self.cost_usd + other.cost_usd, self.approved + other.approved,
            self.reviewed + other.reviewed, self.rejected + other.rejected,
        )  # fmt: skip

    @classmethod
    def of(cls, row: Row) -> Sums:
        return cls(int(row["runs"]), int(row["succeeded"]), Decimal(row["cost_usd"]),
                   int(row["approved"]), int(row["reviewed"]), int(row["rejected"]))  # fmt: skip


@dataclass(frozen=True, slots=True)
class AgentVersions:
    """An agent's version now, the one in force before it (None: none) and when the current
    one was last put in force (stream time)."""

    agent: str
    version: str
    previous: str | None
    since: datetime | None


@dataclass(frozen=True, slots=True)
class Drift:
    """One KPI that moved for the worse: its name, its value before and after (rounded for
    people), and what was compared."""

    kpi: str
    before: float
    after: float
    basis: str = ""  # version or window
    labels: tuple[str, str] = ("", "")  # what each side was: "version 1", "the 7 days to ..."


def drifts(s: WatchdogSettings, before: Sums, after: Sums) -> list[Drift]:
    """The KPIs that moved beyond their thresholds from ``before`` to ``after`` (basis and
    labels left to the caller)."""
    found: list[Drift] = []
    if before.runs >= s.drift_min_runs and after.runs >= s.drift_min_runs:
        b, a = before.succeeded / before.runs, after.succeeded / after.runs
        if b - a >= s.drift_success_drop:
            found.append(Drift("success_rate", b, a))
    if before.approved >= s.drift_min_reviews and after.approved >= s.drift_min_reviews:
        b_cost, a_cost = before.cost_usd / before.approved, after.cost_usd / after.approved
        if b_cost > 0 and a_cost >= b_cost * (1 + Decimal(str(s.drift_cost_rise))):
            found.append(Drift("cost_per_task_usd", float(b_cost), float(a_cost)))
    if before.reviewed >= s.drift_min_reviews and after.reviewed >= s.drift_min_reviews:
        b, a = before.rejected / before.reviewed, after.rejected / after.reviewed
        if a - b >= s.drift_rework_rise:
            found.append(Drift("rework_rate", b, a))
    return found


class DriftDetector:
    """Judges the KPI sums read every ``drift_every_s`` (see the module)."""

    def __init__(self, settings: WatchdogSettings, escalations: Escalations) -> None:
        self.s = settings
        self.escalations = escalations

    def judge(
        self,
        agents: Iterable[AgentVersions],
        sums: dict[tuple[str, str, str], Sums],
        today: date,
        now: float,
        owns: Callable[[str], bool],
    ) -> list[Plan]:
        """``sums``: (agent, version, period) -> Sums, period ``30`` (the last 30 days), ``cur``
        (the last 7), ``prev`` (the 7 before them); ``today``: the UTC day of ``now``."""
        plans: list[Plan] = []
        for a in agents:
            if owns(a.agent):
                plans.extend(self._agent(a, sums, today, now))
        return plans

    def _agent(
        self, a: AgentVersions, sums: dict[tuple[str, str, str], Sums], today: date, now: float
    ) -> list[Plan]:
        recent = a.since is not None and a.since.date() > today - timedelta(days=VERSION_DAYS)
        if a.previous is not None and recent:
            before = sums.get((a.agent, a.previous, "30"), Sums())
            after = sums.get((a.agent, a.version, "30"), Sums())
            labels = (f"version {a.previous}", f"version {a.version}")
            key: tuple[str, ...] = ("version", a.previous, a.version)
        else:
            before = sum((v for k, v in sums.items() if k[0] == a.agent and k[2] == "prev"),
                         Sums())  # fmt: skip
            after = sum((v for k, v in sums.items() if k[0] == a.agent and k[2] == "cur"),
                        Sums())  # fmt: skip
            start = today - timedelta(days=6)
            labels = (f"the 7 days to {start - timedelta(days=1)}", f"the 7 days to {today}")
            key = ("window", start.isoformat())
        plans = []
        for d in drifts(self.s, before, after):
            esc = escalation_id("kpi", a.agent, d.kpi, *key)
            if self.escalations.known(esc):
                continue
            if key[0] == "window" and self.escalations.open_for(KPI_DRIFT, a.agent):
                continue
            plans.append(self._raise(esc, a, replace(d, basis=key[0], labels=labels), now))
        return plans

    def _raise(self, esc: str, a: AgentVersions, d: Drift, now: float) -> Plan:
        basis, labels = d.basis, d.labels
        name = d.kpi.replace("_usd", "").replace("_", " ")
        evidence: dict[str, str | float | None] = {
            "kpi": d.kpi, "before": round(d.before, 6), "after": round(d.after, 6),
            "basis": basis, "before_of": labels[0], "after_of": labels[1],
            "version": a.version,
            "previous_version": a.previous if basis == "version" else None,
        }  # fmt: skip
        raised = raised_event(
            esc, "warning", KPI_DRIFT, now, agent=a.agent,
            message=f"{name} of {a.agent} went from {_show(d.kpi, d.before)} ({labels[0]}) "
            f"to {_show(d.kpi, d.after)} ({labels[1]})",
            evidence=evidence,
        )  # fmt: skip
        self.escalations.raised(raised)
        return Plan(f"esc:{esc}", (Publish(raised, "empty"),))


def _show(kpi: str, value: float) -> str:
    return f"${value:.4f}" if kpi.endswith("_usd") else f"{value:.1%}"
