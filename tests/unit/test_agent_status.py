"""What the registry's pause, resume and retire commands do to an agent client's state
(``AgentClient._obey``): they come to a process by two ways (its durable inbox, and the plain
subscription every process of the agent has), possibly late and only some of them by the inbox,
so the one with the newest lifecycle event (``payload.seq``) decides."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fleetward.schemas.events import CommandIssued
from fleetward.schemas.grants import REGISTRY
from fleetward.services.client import AgentClient


class _Unconnected:
    """Stands in for the NATS connection: ``_obey`` never uses it."""

    def jetstream(self, **_: Any) -> None:
        return None


def client() -> AgentClient:
    return AgentClient(_Unconnected(), "a-1")  # type: ignore[arg-type]


def command(name: str, seq: int | None, n: int = 0) -> CommandIssued:
    payload: dict[str, Any] = {"by": "user:ops"} if seq is None else {"by": "user:ops", "seq": seq}
    return CommandIssued(id=f"c-{name}-{seq}-{n}", actor=REGISTRY, at=datetime.now(UTC),
                         agent="a-1", command=name, payload=payload)  # type: ignore[arg-type]  # fmt: skip


def test_a_pause_read_after_a_newer_resume_changes_nothing() -> None:
    c = client()
    c._obey(command("pause", 10))
    c._obey(command("resume", 12))
    c._obey(command("pause", 10, 1))  # the inbox's copy of the first, read late
    assert not c.paused
    c._obey(command("pause", 15))
    assert c.paused


def test_a_resume_older_than_the_pause_held_leaves_the_agent_paused() -> None:
    c = client()
    c._obey(command("pause", 20))
    c._obey(command("resume", 18))  # only this one reached this process's inbox, late
    assert c.paused


def test_commands_without_a_sequence_apply_in_the_order_read_and_never_end_a_retirement() -> None:
    c = client()
    c._obey(command("pause", None))
    assert c.paused
    c._obey(command("resume", None))
    assert not c.paused
    c._obey(command("retire", 30))
    c._obey(command("resume", None))  # (an older registry's, or not the registry's)
    assert c.paused and c.retired
    c._obey(command("resume", 29))  # older than the retirement
    assert c.paused and c.retired


def test_the_registrys_resume_after_a_retirement_brings_the_agent_back() -> None:
    """A person or a service registered the retired agent again (projections/agents.py)."""
    c = client()
    c._obey(command("retire", 30))
    c._obey(command("resume", 31))
    assert not c.paused and not c.retired
