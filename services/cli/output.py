r"""One way to print what a read command found: a rich table for people, or with ``--json`` one
JSON document for scripts, from the same rows.

- Keys and table headers are the view's column names (``docs/views.md``), an agent's id always
  ``agent_id`` and a task's ``task_id`` (issue 17, part 4; a query renames a view's ``agent`` or
  ``task`` column).
- JSON values: money (a column named ``usd``, ``*_usd``, ``cost*`` or ``spend_today``) is a
  decimal string, exact (``"0.412000"``); other numeric sums are numbers (integers when whole);
  times are RFC 3339 in UTC (``2026-03-14T09:00:00.5Z``); intervals are seconds.
- A listing fetched with a limit says when it is cut off: the table's last line is ``showing N of
  TOTAL (--limit N)`` and the JSON document has ``total`` and ``truncated``.
- Text for people is shown as it is, never obeyed: agents write names, messages and reasons,
  and an escape sequence, a carriage return or a bidi override in them would rewrite what the
  operator sees. ``visible`` writes every such character out as its escape (``\x1b``, ``\r``,
  ``\u202e``) before rich measures a cell, so columns keep their widths; every table cell and
  ``show_one`` line goes through it, and the CLI's ``Terminal`` console, which reads no markup,
  puts whatever else it prints through it too (newlines kept). JSON escapes for itself.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
from rich.console import Console, HighlighterType, JustifyMethod, OverflowMethod
from rich.style import Style
from rich.table import Table
from rich.text import Text

from fleetward.services.db import Conn, q

Row = Mapping[str, Any] | asyncpg.Record
"""A row of a view: as asyncpg returns it, or a dict."""


def is_money(key: str) -> bool:
    """A column of US dollars, by its name (``docs/views.md``: money columns end in ``_usd``;
    the CLI's sums are ``cost_*`` and ``spend_today``)."""
    return key == "usd" or key.endswith("_usd") or key.startswith("cost") or key == "spend_today"


def plain(key: str, value: Any) -> Any:
    """``value`` of column ``key`` as JSON has it (see the module's docstring)."""
    if isinstance(value, datetime):
        when = value if value.tzinfo else value.replace(tzinfo=UTC)
        return when.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal | float) and is_money(key):
        return str(value)
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, list | tuple):
        return [plain(key, v) for v in value]
    if isinstance(value, Mapping | asyncpg.Record):
        return {str(k): plain(str(k), v) for k, v in value.items()}
    return value


def record(row: Row) -> dict[str, Any]:
    """A row as a JSON object: every column, by name."""
    return {k: plain(k, v) for k, v in row.items()}


def write_json(doc: Any) -> None:
    """Print ``doc`` as one JSON document (one line) on stdout."""
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


# C0 controls (ESC, CR, BS, BEL, LF, TAB...), DEL and C1 (U+0080-U+009F: CSI and OSC in one
# byte), the bidi controls (ALM, LRM, RLM, LRE-RLO, LRI-PDI), the line and paragraph separators,
# and lone surrogates (which no terminal encoding can write)
_BIDI_AND_SEPARATORS = r"\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff"
_UNSAFE = re.compile(rf"[\x00-\x1f\x7f-\x9f{_BIDI_AND_SEPARATORS}]")
_UNSAFE_BUT_NEWLINES = re.compile(rf"[\x00-\x09\x0b-\x1f\x7f-\x9f{_BIDI_AND_SEPARATORS}]")
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(found: re.Match[str]) -> str:
    char = found.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def visible(value: str, *, lines: bool = False) -> str:
    r"""``value`` as a terminal should show text someone else wrote: every control character
    (C0, DEL, C1), bidi control, line separator and lone surrogate written out as its escape
    (ESC as ``\x1b``, CR as ``\r``, U+202E as ``\u202e``), so none moves the cursor, clears
    the screen, sets the title, makes a hyperlink or reorders what follows; every other
    character (accents, CJK, emoji, a backslash) as it is. ``lines``: newlines kept (text of
    several lines, as the CLI composed it)."""
    return (_UNSAFE_BUT_NEWLINES if lines else _UNSAFE).sub(_escape, value)


def shown(*parts: str | tuple[str, str]) -> Text:
    """Text for the terminal from ``parts`` (a ``(text, style)`` part in its style), each made
    ``visible``; never read as markup (``[link=...]`` in an agent's name stays text)."""
    out = Text()
    for part in parts:
        body, style = (part, "") if isinstance(part, str) else part
        out.append(visible(body), style=style)
    return out


class Terminal(Console):
    """The CLI's console: it reads no markup or emoji codes (styles come as ``shown`` text),
    and every string it prints, as a line or in a table, is made ``visible`` (newlines kept)
    first, however it was composed."""

    def render_str(
        self,
        text: str,
        *,
        style: str | Style = "",
        justify: JustifyMethod | None = None,
        overflow: OverflowMethod | None = None,
        emoji: bool | None = None,
        markup: bool | None = None,
        highlight: bool | None = None,
        highlighter: HighlighterType | None = None,
    ) -> Text:
        return super().render_str(
            visible(text, lines=True), style=style, justify=justify, overflow=overflow,
            emoji=False, markup=False, highlight=highlight, highlighter=highlighter,
        )  # fmt: skip


class LogLines(logging.Formatter):
    """Log lines for a terminal (a service's, under ``make run``): what they quote (an
    escalation's message, an event's value in an error) made ``visible``, a traceback's
    newlines kept."""

    def format(self, record: logging.LogRecord) -> str:
        return visible(super().format(record), lines=True)


def text(value: Any) -> str:
    """A cell: ``-`` for nothing, the value as text otherwise."""
    return "-" if value is None or value == "" else str(value)


@dataclass(frozen=True, slots=True)
class Column:
    """A table column: ``key`` is the view's column (the header, and the JSON key), ``cell``
    turns the whole row into its text (default: the key's value), ``whole`` keeps it from being
    cut short (ids: what people copy)."""

    key: str
    cell: Callable[[Row], str | Text] | None = None  # Text: made by ``shown``
    whole: bool = False

    def show(self, row: Row) -> Text:
        """The cell of ``row``: its text made ``visible``, never read as markup."""
        cell = self.cell(row) if self.cell is not None else text(row[self.key])
        return cell if isinstance(cell, Text) else shown(cell)


@dataclass(frozen=True, slots=True)
class Page:
    """Rows of a listing, and how many there are in all (``total`` > ``len(rows)``: cut off)."""

    rows: Sequence[Row]
    total: int
    limit: int | None = None

    @property
    def truncated(self) -> bool:
        return self.total > len(self.rows)


async def fetch_page(conn: Conn, query: str, *args: Any, limit: int) -> Page:
    """The rows of the named ``query`` whose last parameter is its LIMIT, at most ``limit``,
    and how many it has in all: when more than ``limit`` come back, the same query is counted
    without its limit (Postgres reads ``LIMIT NULL`` as no limit)."""
    rows = list(await conn.fetch(q(query), *args, limit + 1))
    if len(rows) <= limit:
        return Page(rows, len(rows), limit)
    body = q(query).rstrip().rstrip(";")
    total = await conn.fetchval(f"SELECT count(*) FROM ({body}) AS listed", *args, None)
    return Page(rows[:limit], int(total), limit)


def page_of(rows: Sequence[Row]) -> Page:
    """A listing with no limit: every row."""
    return Page(rows, len(rows))


@dataclass(frozen=True, slots=True)
class Listing:
    """How a listing is shown: its title, columns and what it says when empty."""

    title: str | None
    columns: tuple[Column, ...]
    empty: str = "none"
    fields: tuple[str, ...] = field(default=())  # JSON keys of a row (default: every column)

    def table(self, page: Page) -> Table:
        table = Table(*(c.key for c in self.columns), title=self.title)
        for i, c in enumerate(self.columns):
            table.columns[i].overflow = "fold"  # never "…": a header cut short is ambiguous
            if c.whole:
                table.columns[i].min_width = 8
        for row in page.rows:
            table.add_row(*(c.show(row) for c in self.columns))
        return table

    def json(self, page: Page, meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
        rows = [record({k: r[k] for k in self.fields} if self.fields else r) for r in page.rows]
        return {**(meta or {}), "rows": rows, "total": page.total, "truncated": page.truncated}


def cut_off(page: Page) -> str | None:
    """The line that says a table is cut off, or None when it shows every row."""
    if not page.truncated:
        return None
    return f"showing {len(page.rows):,} of {page.total:,} (--limit N for more)"


def show(
    console: Console,
    listing: Listing,
    page: Page,
    as_json: bool,
    meta: Mapping[str, Any] | None = None,
) -> None:
    """Print ``page`` as ``listing``'s table (with the cut-off line, or its ``empty`` line),
    or, ``as_json``, as one JSON document ``{**meta, rows, total, truncated}``."""
    if as_json:
        write_json(listing.json(page, meta))
        return
    console.print(listing.table(page))
    if not page.rows:
        console.print(listing.empty)
    line = cut_off(page)
    if line is not None:
        console.print(line)


def show_one(console: Console, row: Row, lines: Sequence[str | Text], as_json: bool) -> None:
    r"""One thing (an agent, a budget): ``lines`` for people (each one line: a newline in what
    it quotes is shown as ``\n``), or its row as one JSON object."""
    if as_json:
        write_json(record(row))
        return
    for line in lines:
        console.print(line if isinstance(line, Text) else shown(line))
