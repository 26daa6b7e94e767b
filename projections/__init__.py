"""Projections: pure folds from events to rows, plus their SQL (migrations and named queries)."""

from fleetward.projections.agents import AgentRegistry
from fleetward.projections.base import Meta, Projection, Rows, Table
from fleetward.projections.escalations import EscalationBoard
from fleetward.projections.spend import Spend
from fleetward.projections.tasks import TaskBoard
from fleetward.projections.utilization import Utilization

ALL: tuple[Projection, ...] = (
    AgentRegistry(),
    TaskBoard(),
    Utilization(),
    Spend(),
    EscalationBoard(),
)
BY_NAME: dict[str, Projection] = {p.name: p for p in ALL}

__all__ = ["ALL", "BY_NAME", "Meta", "Projection", "Rows", "Table"]
