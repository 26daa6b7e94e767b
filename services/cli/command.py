"""What a command group gives the CLI: ``Command`` (a name, a help line, its arguments and the
coroutine that runs it), the ``console`` every command prints on (a ``Terminal``: no markup,
control characters shown as escapes), and ``read`` for the commands that show a view.

The person typing is whoever the credentials say: ``FLEETWARD_CREDS`` (or ``--creds``), else, on
the machine that holds Fleetward's signing keys (``make run``), its admin ``PERSON``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from fleetward.services.cli.output import Terminal
from fleetward.services.config import Settings
from fleetward.services.db import Conn
from fleetward.services.runtime.connect import open_runtime

T = TypeVar("T")
PERSON = "user:admin"  # who the CLI acts as without FLEETWARD_CREDS, where the keys are

# piped output is not cut to 80 columns: tables keep their ids whole; what agents wrote is shown,
# never obeyed (output.py: Terminal)
console = Terminal(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)


def no_arguments(_parser: argparse.ArgumentParser) -> None:
    """For a command that takes no arguments."""


@dataclass(frozen=True, slots=True)
class Command:
    """One ``fleetward COMMAND``: ``arguments`` adds its arguments (and actions) to its parser,
    ``run`` does it. An error an operator can fix is raised as a ``FleetwardError``."""

    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[Settings, argparse.Namespace], Awaitable[None]]


async def read(settings: Settings, show: Callable[[Conn], Awaitable[T]]) -> T:
    """Run ``show`` on one connection to the read views (no streams or migrations touched);
    what it returns."""
    async with (
        open_runtime(settings, identity=PERSON, prepare=False, pool_size=2) as rt,
        rt.pool.acquire() as conn,
    ):
        return await show(conn)
