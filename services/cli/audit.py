"""``fleetward audit export|verify`` (the audit trail you can verify, docs/audit.md) and
``fleetward auditor`` (the service that seals the audit chain)."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import BinaryIO

from fleetward.services.audit import chain
from fleetward.services.cli.command import Command, console, no_arguments
from fleetward.services.config import Settings
from fleetward.services.errors import FleetwardError
from fleetward.services.runtime.connect import open_runtime


def bound(text: str) -> int | datetime:
    """A ``--from``/``--to`` value: a stream sequence (digits), a UTC date (``2025-03-14``:
    its midnight) or an RFC 3339 time (UTC when it names no offset)."""
    if text.isdigit():
        return int(text)
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a stream sequence, a date (2025-03-14) nor a time "
            "(2025-03-14T09:00:00Z)"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _arguments(audit: argparse.ArgumentParser) -> None:
    sub = audit.add_subparsers(dest="action", required=True, metavar="ACTION", help="what to do")
    ex = sub.add_parser("export", help="the stored events of FW_EVENTS in order, hash-chained")
    ex.add_argument(
        "--from",
        dest="start",
        type=bound,
        metavar="SEQ|TIME",
        help="first stream sequence, or time (inclusive); default: the first held",
    )
    ex.add_argument(
        "--to",
        dest="end",
        type=bound,
        metavar="SEQ|TIME",
        help="last stream sequence (inclusive) or time (exclusive); default: the last",
    )
    ex.add_argument("--agent", nargs="+", default=[], help="events of these agents")
    ex.add_argument("--team", nargs="+", default=[], help="events of these teams' agents")
    ex.add_argument("--type", nargs="+", default=[], help="events of these types")
    ex.add_argument("--actor", nargs="+", default=[], help="events by these (proven) actors")
    ex.add_argument("--format", choices=chain.FORMATS, default="jsonl",
                    help="jsonl (default, verifiable), csv or ocsf (docs/audit.md)")  # fmt: skip
    ex.add_argument("--out", type=Path, metavar="FILE", help="write here (default: stdout)")
    ve = sub.add_parser("verify", help="check an exported file, alone and against the stream")
    ve.add_argument("file", type=Path, help="a file 'fleetward audit export' wrote (jsonl)")
    live = ve.add_mutually_exclusive_group()
    live.add_argument("--offline", action="store_true", help="check the file alone")
    live.add_argument("--live", action="store_true",
                      help="fail unless the live stream can be checked too")  # fmt: skip


async def _audit(settings: Settings, args: argparse.Namespace) -> None:
    if args.action == "export":
        await _export(settings, args)
    else:
        await _verify(settings, args)


@contextlib.contextmanager
def _output(path: Path | None) -> Iterator[BinaryIO]:
    if path is None:
        yield sys.stdout.buffer
        return
    try:
        f = path.open("wb")
    except OSError as exc:
        raise FleetwardError(f"cannot write {path}: {exc}") from None
    with f:
        yield f


async def _export(settings: Settings, args: argparse.Namespace) -> None:
    from fleetward.services.audit.export import Filters, check_may_export, export  # noqa: PLC0415

    filters = Filters(frozenset(args.agent), frozenset(args.team), frozenset(args.type),
                      frozenset(args.actor))  # fmt: skip
    async with open_runtime(settings, identity=chain.SEALER, prepare=False, pool_size=2) as rt:
        await check_may_export(rt)  # refused: one line, before the file is created
        with _output(args.out) as out, _progress() as tick:
            summary = await export(rt, out, start=args.start, end=args.end, fmt=args.format,
                                   filters=filters, progress=tick)  # fmt: skip
    print(f"exported {summary.records} records of FW_EVENTS seq {summary.from_seq}.."
          f"{summary.to_seq} (chain head {summary.head[:16]}...)", file=sys.stderr)  # fmt: skip


@contextlib.contextmanager
def _progress() -> Iterator[Callable[[int, int, int], None] | None]:
    """A progress bar on stderr when it is a terminal; else no output at all."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console  # noqa: PLC0415
    from rich.progress import (  # noqa: PLC0415
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("exporting FW_EVENTS"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, console=Console(stderr=True)) as bar:
        job = bar.add_task("export", total=None)

        def tick(seq: int, first: int, last: int) -> None:
            bar.update(job, completed=max(seq - first + 1, 0), total=max(last - first + 1, 0))

        yield tick


async def _verify(settings: Settings, args: argparse.Namespace) -> None:
    from fleetward.services.audit.verify import (  # noqa: PLC0415
        NotVerified,
        check_file,
        check_live,
    )

    verdict = check_file(args.file)
    h = verdict.header
    console.print(f"{args.file}: {verdict.records} records of {h.stream} seq {h.from_seq}.."
                  f"{h.to_seq}, chain intact" + (f", {verdict.seals_checked} seal(s) in the "
                  "file agree" if verdict.seals_checked else ""))  # fmt: skip
    if args.offline:
        return
    try:
        async with open_runtime(settings, identity=chain.SEALER, prepare=False,
                                pool_size=2) as rt:  # fmt: skip
            live = await check_live(rt, args.file, h)
    except FleetwardError as exc:
        if args.live or isinstance(exc, NotVerified):
            raise
        console.print(f"not checked against the live stream: {exc}")
        return
    console.print(f"matches the live stream ({live.messages} messages chained); "
                  f"{live.seals} seal(s) of svc:audit in its range agree")  # fmt: skip


async def _auditor(settings: Settings, args: argparse.Namespace) -> None:
    from fleetward.services.serve import run_services  # noqa: PLC0415  # only services need it

    async with open_runtime(settings, identity=chain.SEALER) as rt:

        async def ready(port: int) -> None:
            console.print(f"auditor running (seals every {settings.audit_seal_s:g} s); "
                          f"metrics on :{port}/metrics")  # fmt: skip

        await run_services(rt, (), auditor=True, on_ready=ready)


AUDIT = Command("audit", "export the audit log (hash-chained) and verify exported files",
                _arguments, _audit)  # fmt: skip
AUDITOR = Command("auditor", "run the auditor service: seals the audit chain (audit.sealed)",
                  no_arguments, _auditor)  # fmt: skip
