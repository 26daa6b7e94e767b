"""``fleetward review``: the fleet's lifecycle review by team (issue 16, part 4): agents to
retire, to refresh and to promote, each with its evidence (the KPI figures) and the one command
that acts on it (the rules: lifecycle_review.py). Printed as text, markdown or JSON, and
written to ``--out`` as well. A team that does not exist or a bad number is one line, exit 2."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from datetime import date
from typing import Any

import anyio

from fleetward.services.cli.args import MAX_LIMIT, ident, whole
from fleetward.services.cli.command import Command, console, read
from fleetward.services.cli.lifecycle_review import VERDICTS, Candidate, judge
from fleetward.services.config import Settings
from fleetward.services.db import Conn, q
from fleetward.services.errors import FleetwardError

FORMATS = ("text", "markdown", "json")
HEADINGS = {"retire": "Retire", "refresh": "Refresh", "promote": "Promote"}


def _arguments(review: argparse.ArgumentParser) -> None:
    review.add_argument("--team", metavar="T", type=ident("team"), help="only this team")
    review.add_argument("--idle-days", type=whole(1, 3650), default=14, metavar="N",
                        help="an agent with no run or tool call for N UTC days is a "
                             "candidate to retire (default 14)")  # fmt: skip
    review.add_argument("--top", type=whole(0, MAX_LIMIT), default=1, metavar="K",
                        help="candidates to promote per team (default 1)")  # fmt: skip
    review.add_argument("--format", default="text", choices=FORMATS, metavar="|".join(FORMATS),
                        help="text (default), markdown or json")  # fmt: skip
    review.add_argument("--out", metavar="FILE", help="also write the review to FILE")
    review.add_argument(
        "--json", action="store_const", const="json", dest="format",
        help="the same as --format json: {date, team, idle_days, candidates}",
    )  # fmt: skip


async def _review(settings: Settings, args: argparse.Namespace) -> None:
    found: list[Candidate] = []
    day: list[date] = []

    async def load(conn: Conn) -> None:
        if args.team is not None and not await conn.fetchval(q("kpis_team_known"), args.team):
            raise FleetwardError(f"no team {args.team!r}: no agent is in it")
        today = await conn.fetchval(q("utc_today"))
        agents = await conn.fetch(q("review_agents"), args.team)
        rework = await conn.fetch(q("review_rework"), today, args.team)
        found.extend(judge([dict(r) for r in agents], [dict(r) for r in rework], today,
                           args.idle_days, args.top))  # fmt: skip
        day.append(today)

    await read(settings, load)
    text = render(args.format, found, day[0], args.team, args.idle_days)
    if args.out:
        try:
            await anyio.Path(args.out).write_text(text)
        except OSError as exc:
            raise FleetwardError(f"cannot write {args.out}: {exc.strerror}") from None
    console.print(text, markup=False, end="")


def render(
    fmt: str, found: Sequence[Candidate], today: date, team: str | None, idle_days: int
) -> str:
    """The review as ``fmt`` (text, markdown, json), ending in a newline."""
    if fmt == "json":
        doc = {"date": today.isoformat(), "team": team, "idle_days": idle_days,
               "candidates": [_as_json(c) for c in found]}  # fmt: skip
        return json.dumps(doc) + "\n"
    md = fmt == "markdown"
    scope = f"team {team}" if team else "all teams"
    lines = [f"{'# ' if md else ''}Lifecycle review, {today.isoformat()} ({scope}; idle: "
             f"{idle_days} days)"]  # fmt: skip
    if not found:
        lines += ["", "No candidates: every agent earns its keep."]
    for t in sorted({c.team for c in found}):
        lines += ["", f"{'## ' if md else ''}Team {t}"]
        for verdict in VERDICTS:
            mine = [c for c in found if c.team == t and c.verdict == verdict]
            if mine:
                lines += ["", f"{'### ' if md else '  '}{HEADINGS[verdict]}"]
                lines += [line for c in mine for line in _entry(c, md)]
    return "\n".join(lines) + "\n"


def _entry(c: Candidate, md: bool) -> list[str]:
    figures = ", ".join(f"{k} {_figure(v)}" for k, v in c.evidence.items())
    if md:
        return [f"- **{c.agent_id}** (version {c.version or '-'}): {c.why}",
                f"  - evidence: {figures}", f"  - act: `{c.command}`"]  # fmt: skip
    return [f"    {c.agent_id} (version {c.version or '-'}): {c.why}",
            f"      evidence: {figures}", f"      act: {c.command}"]  # fmt: skip


def _figure(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "; ".join(map(str, value))
    return "-" if value is None else str(value)


def _as_json(c: Candidate) -> dict[str, Any]:
    return {"verdict": c.verdict, "agent_id": c.agent_id, "team": c.team,
            "version": c.version, "why": c.why, "evidence": c.evidence,
            "command": c.command}  # fmt: skip


REVIEW = Command(
    "review",
    "the fleet's lifecycle review by team: agents to retire, refresh and promote, with the KPI "
    "figures behind each and the command that acts on it",
    _arguments,
    _review,
)
