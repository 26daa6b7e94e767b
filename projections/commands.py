"""Commands: the durable commands issued to agents (stream FW_COMMANDS, subject
``fw.cmd.<agent>.<sender>``), one row per command, for audit: what each agent was told, by
whom, when.

It is also the reader that admits every subject of FW_COMMANDS: an event there that admission
refuses (not JSON, a command from an agent, another type's event) is dead-lettered under this
projection's name and counted, like on every other Fleetward subject. (Each agent reads its own
inbox too, but an agent's reader records nothing Fleetward can see.)

A command is keyed by its event id and its first delivery is kept: the same command published
again, whatever its message id, leaves the row as it was, live and in a rebuild. FW_COMMANDS
keeps 30 days: a rebuild brings back only what the stream still holds.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

import msgspec

from fleetward.projections.base import Key, Meta, Projection, Rows, Table
from fleetward.schemas.events import CommandIssued, Event
from fleetward.schemas.streams import COMMANDS_STREAM
from fleetward.schemas.subjects import wildcard

COMMANDS = Table(
    name="fleetward.commands",
    key=("command_id",),
    key_types=("text",),
    columns=(
        "command_id",
        "agent",
        "command",
        "reason",
        "task",
        "payload",
        "issued_by",
        "issued_at",
        "seq",
    ),
)


class Commands(Projection):
    name: ClassVar[str] = "commands"
    stream: ClassVar[str] = COMMANDS_STREAM
    subjects: ClassVar[tuple[str, ...]] = (wildcard("cmd"),)
    tables: ClassVar[tuple[Table, ...]] = (COMMANDS,)

    def touches(self, event: Event, meta: Meta) -> Iterable[tuple[Table, Key]]:
        if isinstance(event, CommandIssued):
            yield COMMANDS, (event.id,)

    def apply(self, rows: Rows, event: Event, meta: Meta) -> None:
        if not isinstance(event, CommandIssued) or rows.get(COMMANDS, (event.id,)) is not None:
            return
        rows.put(
            COMMANDS,
            {
                "command_id": event.id,
                "agent": event.agent,
                "command": event.command,
                "reason": event.reason,
                "task": event.task,
                "payload": msgspec.json.encode(event.payload).decode(),
                "issued_by": event.actor,
                "issued_at": meta.time,
                "seq": meta.seq,
            },
        )
