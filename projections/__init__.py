"""Projections: pure folds from events to rows, plus their SQL (migrations and named queries)."""

from projections.agents import AgentRegistry
from projections.base import Meta, Projection, Rows, Table
from projections.escalations import EscalationBoard
from projections.spend import Spend
from projections.tasks import TaskBoard
from projections.utilization import Utilization

ALL: tuple[Projection, ...] = (
    AgentRegistry(),
    TaskBoard(),
    Utilization(),
    Spend(),
    EscalationBoard(),
)
BY_NAME: dict[str, Projection] = {p.name: p for p in ALL}

__all__ = ["ALL", "BY_NAME", "Meta", "Projection", "Rows", "Table"]
