"""The oversight fold (projections/approvals.py) gives the same rows and emits the same events
however the projector cuts the stream into batches: what ``touches`` and ``touches_more`` name
before a batch is folded must cover every row the fold reads in it.

The stream: agents that re-register into other teams and risk classes, tool policies per team,
risk class and agent, approval requests and decisions, and tool calls (gated, denied, over a
cap, naming approvals). Found by tests/integration/test_fuzz.py with batches of 100 near the
head: a registration into another team, then a tool call in the same batch, was judged by the
old team's policies (the new team's were never read), and a rebuild judged it otherwise.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from fleetward.projections.approvals import APPROVALS, VIOLATIONS, Oversight
from fleetward.projections.base import Meta
from fleetward.schemas.events import (
    AgentRegistered,
    ApprovalDenied,
    ApprovalGranted,
    ApprovalRequested,
    Event,
    PolicySet,
    ToolCalled,
)
from fleetward.schemas.ids import policy_id
from fleetward.schemas.subjects import subject_of
from tests.unit.test_projections import CHUNKINGS, T0, USER, env, fold_at_once, fold_in_batches

AGENTS = [f"ov-{i}" for i in range(6)]
TEAMS = ["red", "blue", "green"]
RISKS = ["low", "medium", "high"]
TOOLS = ["shell", "pay", "web", "deploy"]


def _policy(rng: random.Random) -> PolicySet:
    scope, scope_id = rng.choice(
        [*(("team", t) for t in TEAMS), *(("risk", r) for r in RISKS),
         *(("agent", a) for a in AGENTS[:2])]
    )  # fmt: skip
    tools = rng.sample(TOOLS, 3)
    return PolicySet(
        **env(USER), policy=policy_id(scope, scope_id), scope=scope, scope_id=scope_id,
        allow=(tools[0],), deny=(tools[1],), approve=(tools[2],),
        default=rng.choice(["allow", "deny", "approve"]),
        max_cost_usd=rng.choice([None, 0.5, 2.0]),
    )  # fmt: skip


def stream(seed: int, n: int = 1500) -> list[tuple[Event, Meta]]:
    """``n`` events of oversight, in stream order."""
    rng = random.Random(seed)
    requests: list[tuple[str, str, str]] = []  # open: (approval, agent, tool)
    decided: list[tuple[str, str, str]] = []  # granted or denied, in that order
    events: list[Event] = []
    for i in range(n):
        agent = rng.choice(AGENTS)
        roll = rng.random()
        if roll < 0.15:
            events.append(AgentRegistered(
                **env(agent), agent=agent, name=agent, owner="o@example.com",
                team=rng.choice(TEAMS), risk_class=rng.choice(RISKS),
            ))  # fmt: skip
        elif roll < 0.22:
            events.append(_policy(rng))
        elif roll < 0.37:
            approval, tool = f"ap-{i}", rng.choice(TOOLS)
            requests.append((approval, agent, tool))
            events.append(ApprovalRequested(
                **env(agent), approval=approval, agent=agent, kind="tool_call", name=tool,
            ))  # fmt: skip
        elif roll < 0.52 and (requests or decided):
            again = not requests or rng.random() < 0.1  # decided already: refused
            pick = rng.choice(decided) if again else requests.pop(rng.randrange(len(requests)))
            decided.append(pick)
            decision: Any = rng.choice([ApprovalGranted, ApprovalDenied])
            events.append(decision(**env(USER), approval=pick[0], agent=pick[1], reason="ok"))
        elif roll < 0.62 and decided:  # a call naming a decided request of its tool
            approval, asker, tool = rng.choice(decided[-20:])
            events.append(ToolCalled(
                **env(asker), agent=asker, tool=tool, duration_ms=5, ok=True,
                cost_usd=rng.choice([0.0, 1.0]), approval=approval,
            ))  # fmt: skip
        else:
            events.append(ToolCalled(
                **env(agent), agent=agent, tool=rng.choice(TOOLS), duration_ms=5, ok=True,
                cost_usd=rng.choice([0.0, 1.0, 3.0]),
                approval=rng.choice([None, None, f"ap-{rng.randrange(i + 1)}"]),
            ))  # fmt: skip
    return [
        (e, Meta(seq, T0 + timedelta(seconds=seq), subject_of(e)))
        for seq, e in enumerate(events, start=1)
    ]


def test_the_stream_reaches_what_the_batching_test_compares() -> None:
    """Guards the test below: violations of every kind, decisions stamped with policies, and
    registrations into another team followed by a call in the next few events."""
    outbox: list[tuple[Event, int]] = []
    refused: Counter[str] = Counter()
    whole = fold_at_once(Oversight(), stream(1), refused, outbox)
    kinds = Counter(r["kind"] for r in whole[VIOLATIONS.name].values())
    assert set(kinds) == {"denied", "unapproved", "over_cap"}, kinds
    decided = [r for r in whole[APPROVALS.name].values() if r["decided_by"]]
    assert decided and any(r["policy_id"] for r in decided)
    assert any(r["used_by"] for r in whole[APPROVALS.name].values())
    assert refused["approval.granted"] + refused["approval.denied"] > 0  # decided twice
    assert len(outbox) > 100


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("chunking", list(CHUNKINGS))
def test_oversight_folds_the_same_in_any_batches(chunking: str, seed: int) -> None:
    items = stream(seed)
    whole_out: list[tuple[Event, int]] = []
    batched_out: list[tuple[Event, int]] = []
    whole = fold_at_once(Oversight(), items, outbox=whole_out)
    sizes = CHUNKINGS[chunking](random.Random(seed))
    batched = fold_in_batches(Oversight(), items, sizes, outbox=batched_out)
    for table in Oversight.tables:
        assert whole[table.name], f"{table.name} is empty: the test would prove nothing"
        differ = sorted(
            k for k in whole[table.name].keys() | batched[table.name].keys()
            if whole[table.name].get(k) != batched[table.name].get(k)
        )  # fmt: skip
        first = differ[0] if differ else ()
        a, b = whole[table.name].get(first) or {}, batched[table.name].get(first) or {}
        cols = {c: (a.get(c), b.get(c)) for c in a.keys() | b.keys() if a.get(c) != b.get(c)}
        assert not differ, f"{table.name}: {len(differ)} rows differ, {first}: {cols}"
    assert whole_out == batched_out
