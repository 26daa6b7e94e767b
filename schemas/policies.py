"""Tool policies: which tools an agent may call, may not call, or may call only with a person's
approval (DESIGN 3.10). Pure: the one rule every reader applies, the oversight projection
(projections/approvals.py, which records violations), the agent's client (before a call) and
the CLI (``fleetward policies show``).

A policy covers one scope: an agent, a team, or a risk class (``agent.registered``'s
``risk_class``); there is at most one per scope, under ``schemas.ids.policy_id(scope,
scope_id)``, and each ``policy.set`` replaces it as its next version. The policies in force for
an agent are those of its id, its team and its risk class (``scopes_of``).

The verdict on tool ``t`` (``verdict``):
1. the most specific policy that lists ``t`` decides (agent, then team, then risk class); a
   policy listing ``t`` in several lists decides the strictest (deny > approve > allow);
2. else the ``default`` of the most specific policy in force;
3. else (no policy at all) ``allow``.
The cost cap per call is the lowest ``max_cost_usd`` of the policies in force (USD; None: no
cap), whichever decided the verdict.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from fleetward.schemas.events import PolicyScope, PolicySet, ToolVerdict
from fleetward.schemas.ids import policy_id

SPECIFICITY: Final[tuple[PolicyScope, ...]] = ("agent", "team", "risk")  # most specific first
RISK_CLASSES: Final = ("low", "medium", "high", "critical")
_STRICTNESS: Final[dict[str, int]] = {"allow": 0, "approve": 1, "deny": 2}


@dataclass(frozen=True, slots=True)
class Policy:
    """One scope's policy as it stands: its last ``policy.set`` and that set's version."""

    policy: str
    scope: str
    scope_id: str
    version: int
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    approve: tuple[str, ...] = ()
    default: str = "allow"
    max_cost_usd: float | None = None

    @classmethod
    def of(cls, event: PolicySet, version: int) -> Policy:
        return cls(event.policy, event.scope, event.scope_id, version, event.allow, event.deny,
                   event.approve, event.default, event.max_cost_usd)  # fmt: skip

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Policy:
        """From a row of ``fleetward.policies`` (the columns of the fields above, ``default``
        as ``default_verdict``)."""
        return cls(row["policy_id"], row["scope"], row["scope_id"], int(row["version"]),
                   tuple(row["allow"]), tuple(row["deny"]), tuple(row["approve"]),
                   row["default_verdict"], row["max_cost_usd"])  # fmt: skip

    def listed(self, tool: str) -> str | None:
        """This policy's verdict on ``tool`` if it lists it (the strictest list), else None."""
        found = [v for v, tools in (("deny", self.deny), ("approve", self.approve),
                                    ("allow", self.allow)) if tool in tools]  # fmt: skip
        return max(found, key=_STRICTNESS.__getitem__) if found else None


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the policies in force say of one tool: ``verdict`` (allow, deny, approve), the
    policy that decided it and its version (None: no policy in force), and the cost cap per
    call (USD, None: none)."""

    verdict: ToolVerdict
    policy: str | None = None
    version: int | None = None
    max_cost_usd: float | None = None

    def stamp(self) -> str:
        """``policy@version`` for people, or ``none``."""
        return f"{self.policy}@{self.version}" if self.policy else "none"


def scopes_of(agent: str, team: str | None, risk_class: str | None) -> list[tuple[str, str]]:
    """The (scope, scope id) pairs whose policies cover an agent, most specific first (an
    agent not registered yet has no team or risk class: only its own scope)."""
    out = [("agent", agent)]
    if team:
        out.append(("team", team))
    if risk_class:
        out.append(("risk", risk_class))
    return out


def ids_of(agent: str, team: str | None, risk_class: str | None) -> list[str]:
    """The policy ids that cover an agent, most specific first."""
    return [policy_id(scope, key) for scope, key in scopes_of(agent, team, risk_class)]


def in_force(policies: Iterable[Policy | None]) -> list[Policy]:
    """The policies that exist, most specific first (``policies`` in ``ids_of`` order)."""
    order: dict[str, int] = {scope: i for i, scope in enumerate(SPECIFICITY)}
    return sorted((p for p in policies if p is not None), key=lambda p: order[p.scope])


def verdict(tool: str, policies: Iterable[Policy | None]) -> Verdict:
    """The verdict on ``tool`` under the policies in force (see the module)."""
    ordered = in_force(policies)
    caps = [p.max_cost_usd for p in ordered if p.max_cost_usd is not None]
    cap = min(caps) if caps else None
    for p in ordered:
        listed = p.listed(tool)
        if listed is not None:
            return Verdict(listed, p.policy, p.version, cap)  # type: ignore[arg-type]
    if ordered:
        first = ordered[0]
        return Verdict(first.default, first.policy, first.version, cap)  # type: ignore[arg-type]
    return Verdict("allow", None, None, cap)


def scope_problem(scope: str, scope_id: str) -> str | None:
    """Why ``(scope, scope_id)`` names no scope a policy can cover, or None."""
    if scope not in SPECIFICITY:
        return f"no policy scope {scope!r}: agent, team or risk"
    if scope == "risk" and scope_id not in RISK_CLASSES:
        return f"no risk class {scope_id!r}: {', '.join(RISK_CLASSES)}"
    return None


def event_problem(event: PolicySet) -> str | None:
    """Why a ``policy.set`` cannot stand (its scope, or an id that is not its scope's), or
    None. Readers refuse such an event (``invalid``)."""
    problem = scope_problem(event.scope, event.scope_id)
    if problem is None and event.policy != policy_id(event.scope, event.scope_id):
        problem = (
            f"policy {event.policy!r} is not the id of {event.scope} {event.scope_id!r}: "
            f"{policy_id(event.scope, event.scope_id)!r}"
        )
    return problem
