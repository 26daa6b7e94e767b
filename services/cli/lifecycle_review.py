"""The lifecycle review's rules (issue 16, part 4): which agents to retire, to refresh and to
promote, each with the KPI figures that put it there and the one command that acts on it. Pure:
``judge`` takes the rows ``fleetward review`` read (queries ``review_agents``, ``review_rework``)
and returns the review.

- **retire**: idle for ``idle_days`` UTC days or more (no run started or finished and no tool
  called since; an agent that never worked counts from its registration), or low success at high
  cost over the last 30 days: at least ``MIN_RUNS`` runs, a success rate under ``LOW_SUCCESS``
  and a cost per run above its team's median.
- **refresh**: a ``kpi_drift`` escalation of the agent is open, or its rework is rising: of at
  least ``MIN_REVIEWS`` deliverables reviewed in the last 7 days, a share rejected more than
  ``RISE`` above that of the 7 days before (which had reviews too). The command rolls it back to
  the version it ran before, when there is one.
- **promote**: per team, the ``top`` agents by value per cost over the last 30 days (tasks done
  per USD; done at no cost ranks first), among those with a task done and no other verdict,
  not promoted at the version they run already.
An agent appears under one verdict at most: retire, then refresh, then promote.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from statistics import median
from typing import Any, Final, Literal

Verdict = Literal["retire", "refresh", "promote"]
VERDICTS: Final[tuple[Verdict, ...]] = ("retire", "refresh", "promote")
MIN_RUNS: Final = 5
LOW_SUCCESS: Final = 0.5
MIN_REVIEWS: Final = 2
RISE: Final = 0.1


@dataclass(frozen=True, slots=True)
class Candidate:
    """One agent the review lists: the verdict, why (one line), the KPI figures behind it and
    the command that acts on it."""

    verdict: Verdict
    agent_id: str
    team: str
    version: str
    why: str
    evidence: dict[str, Any] = field(default_factory=dict)
    command: str = ""


def judge(
    agents: Sequence[Mapping[str, Any]],
    rework: Iterable[Mapping[str, Any]],
    today: date,
    idle_days: int,
    top: int = 1,
) -> list[Candidate]:
    """The review of ``agents`` (rows of ``review_agents``) by team, then verdict, then agent."""
    rising = {r["agent_id"]: r for r in rework if _rising(r)}
    medians = _team_medians(agents)
    found: list[Candidate] = []
    listed: set[str] = set()
    for a in agents:
        why = _retire(a, today, idle_days, medians.get(a["team"]))
        if why is not None:
            found.append(_candidate("retire", a, *why, f"fleetward agents retire {a['agent_id']}"))
            listed.add(a["agent_id"])
    for a in agents:
        if a["agent_id"] in listed:
            continue
        why = _refresh(a, rising.get(a["agent_id"]))
        if why is not None:
            back = a["previous_version"]
            act = (f"fleetward agents rollback {a['agent_id']} --to {back}" if back
                   else f"(no earlier version of {a['agent_id']} to roll back to)")  # fmt: skip
            found.append(_candidate("refresh", a, *why, act))
            listed.add(a["agent_id"])
    found.extend(_promote([a for a in agents if a["agent_id"] not in listed], top))
    order = {v: i for i, v in enumerate(VERDICTS)}
    return sorted(found, key=lambda c: (c.team, order[c.verdict], c.agent_id))


def _candidate(
    verdict: Verdict, a: Mapping[str, Any], why: str, evidence: dict[str, Any], command: str
) -> Candidate:
    return Candidate(verdict, a["agent_id"], a["team"], a["version"], why, evidence, command)


def _figures(a: Mapping[str, Any], *names: str) -> dict[str, Any]:
    return {n: _plain(a[n]) for n in names}


def _plain(value: Any) -> Any:
    """A figure as JSON has it: numeric as a number, a day as ISO text."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, date):
        return value.isoformat()
    return value


def _team_medians(agents: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Each team's median cost per run over the last 30 days, among its agents that ran."""
    costs: dict[str, list[float]] = {}
    for a in agents:
        if a["cost_per_run_usd"] is not None:
            costs.setdefault(a["team"], []).append(float(a["cost_per_run_usd"]))
    return {team: median(c) for team, c in costs.items()}


def _retire(
    a: Mapping[str, Any], today: date, idle_days: int, team_median: float | None
) -> tuple[str, dict[str, Any]] | None:
    registered = a["registered_at"].date() if a["registered_at"] else None
    since = a["last_active_day"] or registered
    if since is not None and (today - since).days >= idle_days:
        idle = (today - since).days
        what = "no run or tool call" if a["last_active_day"] else "never ran, registered"
        evidence = {"idle_days": idle, "last_active_day": _plain(a["last_active_day"]),
                    "registered_at": a["registered_at"].isoformat() if registered else None,
                    **_figures(a, "runs", "cost_usd")}  # fmt: skip
        return f"idle {idle} days ({what} since {since.isoformat()})", evidence
    runs, success, per_run = a["runs"] or 0, a["success_rate"], a["cost_per_run_usd"]
    if (runs >= MIN_RUNS and success is not None and success < LOW_SUCCESS
            and per_run is not None and team_median is not None
            and float(per_run) > team_median):  # fmt: skip
        evidence = {**_figures(a, "runs", "success_rate", "cost_per_run_usd", "cost_usd"),
                    "team_median_cost_per_run_usd": team_median}  # fmt: skip
        why = (f"low success at high cost: {success:.0%} of {runs} runs succeeded at "
               f"${float(per_run):.4f} a run (team median ${team_median:.4f})")  # fmt: skip
        return why, evidence
    return None


def _rising(r: Mapping[str, Any]) -> bool:
    now, before = r["reviewed_now"], r["reviewed_before"]
    if now < MIN_REVIEWS or before == 0:
        return False
    return bool(r["rejected_now"] / now > r["rejected_before"] / before + RISE)


def _refresh(
    a: Mapping[str, Any], rework: Mapping[str, Any] | None
) -> tuple[str, dict[str, Any]] | None:
    reasons, evidence = [], _figures(a, "success_rate", "cost_per_task_usd", "rework_rate")
    if a["drifts"]:
        reasons.append(f"KPI drift: {'; '.join(a['drifts'])}")
        evidence["kpi_drift"] = list(a["drifts"])
    if rework is not None:
        now = rework["rejected_now"] / rework["reviewed_now"]
        before = rework["rejected_before"] / rework["reviewed_before"]
        reasons.append(f"rework rising: {now:.0%} of reviews rejected in the last 7 days, "
                       f"{before:.0%} the 7 before")  # fmt: skip
        evidence.update(rework_rate_7d=now, rework_rate_prev_7d=before,
                        reviewed_7d=rework["reviewed_now"])  # fmt: skip
    if not reasons:
        return None
    evidence["previous_version"] = a["previous_version"]
    return "; ".join(reasons), evidence


def _promote(agents: Sequence[Mapping[str, Any]], top: int) -> list[Candidate]:
    """The ``top`` agents of each team by tasks done per USD (30 days)."""
    ranked: dict[str, list[tuple[float, str, Mapping[str, Any]]]] = {}
    for a in agents:
        done = a["tasks_done"] or 0
        if done < 1 or a["promoted_version"] == a["version"]:
            continue
        cost = float(a["cost_usd"] or 0)
        value = float("inf") if cost == 0 else done / cost
        ranked.setdefault(a["team"], []).append((-value, a["agent_id"], a))
    found = []
    for team_rows in ranked.values():
        for rank, (value, _, a) in enumerate(sorted(team_rows, key=lambda t: t[:2])[:top], 1):
            per_usd = -value
            evidence = {**_figures(a, "tasks_done", "cost_usd", "cost_per_task_usd",
                                   "success_rate", "rework_rate"),
                        "tasks_per_usd": None if per_usd == float("inf") else per_usd,
                        "rank_in_team": rank}  # fmt: skip
            shown = "at no cost" if per_usd == float("inf") else f"{per_usd:.1f} tasks per USD"
            why = f"top value per cost in team {a['team']}: {a['tasks_done']} tasks done, {shown}"
            found.append(_candidate("promote", a, why, evidence,
                                    f"fleetward agents promote {a['agent_id']}"))  # fmt: skip
    return found
