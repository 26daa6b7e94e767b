"""Projections: pure folds from events to rows, plus their SQL (migrations and named queries).

Invariant: every subject of every stream (schemas/streams.py) is read by a projection in
``ALL``, so whatever is published on a Fleetward subject is applied or dead-lettered.
"""

from fleetward.projections.agents import AgentRegistry
from fleetward.projections.approvals import Oversight
from fleetward.projections.audit import AuditSeals
from fleetward.projections.base import Meta, Projection, Rows, Table
from fleetward.projections.budgets import Budgets
from fleetward.projections.commands import Commands
from fleetward.projections.escalations import EscalationBoard
from fleetward.projections.people import People
from fleetward.projections.spend import Spend
from fleetward.projections.tasks import TaskBoard
from fleetward.projections.utilization import Utilization

ALL: tuple[Projection, ...] = (
    AgentRegistry(),
    TaskBoard(),
    Utilization(),
    Spend(),
    EscalationBoard(),
    Budgets(),  # reads fw.budget.>: nothing published there escapes the dead letters
    Commands(),  # reads FW_COMMANDS, likewise
    People(),  # reads fw.person.>: people's roles
    Oversight(),  # reads fw.approval.>, fw.policy.> (and fw.agent.>): approvals, policies
    AuditSeals(),  # reads fw.audit.>: the audit chain's seals
)
BY_NAME: dict[str, Projection] = {p.name: p for p in ALL}

__all__ = ["ALL", "BY_NAME", "Meta", "Projection", "Rows", "Table"]
