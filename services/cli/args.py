"""How the CLI reads its arguments: the parser every command is built with, and the types that
refuse a bad value while parsing, before anything connects.

Every refusal is one line on stderr, ``fleetward: error: ...`` with the command to ask for help,
and exit code 2: no usage block, no traceback (issue 17, part 4)."""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from importlib.metadata import PackageNotFoundError, version
from typing import Final, NoReturn

from fleetward.schemas.bounds import IDENT_PATTERN, MAX_LIMIT_USD

MAX_LIMIT = 10_000  # rows a listing shows at most (--limit); a script pages with --json
_IDENT = re.compile(IDENT_PATTERN)


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line: ``fleetward: error: MESSAGE (see
    'PROG --help')`` on stderr, then exit 2. Its subparsers are of this class too
    (``add_subparsers`` makes them with ``type(self)``)."""

    def error(self, message: str) -> NoReturn:
        message = " ".join(message.split())  # argparse folds some messages over lines
        print(f"fleetward: error: {message} (see '{self.prog} --help')", file=sys.stderr)
        sys.exit(2)


def package_version() -> str:
    """The installed Fleetward's version (pyproject.toml), or ``unknown`` when run unpacked."""
    try:
        return version("fleetward")
    except PackageNotFoundError:
        return "unknown"


def ident(what: str) -> Callable[[str], str]:
    """An argument type: an id of ``what`` (an agent, a task, ...), of ``[A-Za-z0-9_-]``, 1 to
    64 characters (``schemas/bounds.py`` ``IDENT_PATTERN``, the contract's ids). Raises
    ``argparse.ArgumentTypeError`` for anything else."""

    def check(text: str) -> str:
        if not _IDENT.match(text):
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a valid {what}: 1 to 64 characters of A-Z a-z 0-9 _ -"
            )
        return text

    check.__name__ = what.replace(" ", "_")
    return check


def whole(low: int, high: int, zero: str = "") -> Callable[[str], int]:
    """An argument type: a whole number from ``low`` to ``high``. ``zero`` says what 0 means
    where it is allowed (``low`` 0), for the message. Raises ``argparse.ArgumentTypeError``."""

    def check(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            also = f" ({zero})" if zero else ""
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a whole number from {low:,}{also} to {high:,}"
            )
        return value

    check.__name__ = "number"
    return check


def seconds(low: float = 0.0, high: float = 366 * 86_400.0) -> Callable[[str], float]:
    """An argument type: a finite number of seconds from ``low`` to ``high`` (a year by
    default). Raises ``argparse.ArgumentTypeError``."""

    def check(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not low <= value <= high:  # NaN compares false
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a number of seconds from {low:g} to {high:g}"
            )
        return value

    check.__name__ = "seconds"
    return check


def share(text: str) -> float:
    """An argument type: a share above 0 and at most 1 (0.8: 80%). Raises
    ``argparse.ArgumentTypeError``."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a share above 0 and at most 1")
    return value


MICRO_USD: Final = Decimal("0.000001")  # the smallest amount of USD an argument may name


def usd(high: float = MAX_LIMIT_USD) -> Callable[[str], float]:
    """An argument type: an amount of US dollars, 0 to ``high`` (``schemas/bounds.py``), written
    as a plain decimal (``12.50``: no ``$``, no exponent). Raises
    ``argparse.ArgumentTypeError``."""

    def check(text: str) -> float:
        try:
            amount = Decimal(text.strip())
        except InvalidOperation:
            amount = Decimal(-1)
        if not amount.is_finite() or "e" in text.lower() or not 0 <= amount <= Decimal(high):
            raise argparse.ArgumentTypeError(
                f"{text!r} is not an amount of USD from 0 to {high:,.0f} (e.g. 12.50)"
            )
        if amount != amount.quantize(MICRO_USD):  # what the views keep and show
            raise argparse.ArgumentTypeError(
                f"{text!r} has more than 6 decimals: amounts are whole millionths of a dollar"
            )
        return float(amount)

    check.__name__ = "usd"
    return check


def add_limit(parser: argparse.ArgumentParser, default: int, zero_all: bool = False) -> None:
    """``--limit N``: the most rows shown, 1 to ``MAX_LIMIT`` (0 too with ``zero_all``: all)."""
    low = 0 if zero_all else 1
    parser.add_argument(
        "--limit",
        type=whole(low, MAX_LIMIT, "all" if zero_all else ""),
        default=default,
        metavar="N",
        help=f"show at most N rows (default {default}; {low} to {MAX_LIMIT:,}"
        + ("; 0: all" if zero_all else "")
        + ")",
    )


def add_json(
    parser: argparse.ArgumentParser, shape: str = "{rows, total, truncated}", nested: bool = False
) -> None:
    """``--json``: one JSON document on stdout instead of a table. ``nested``: on an action's
    parser whose command has ``--json`` too (either place then works)."""
    parser.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS if nested else False,
        help=f"print one JSON document {shape} for scripts: keys are the views' column "
        "names, money a decimal string, times RFC 3339 UTC",
    )
