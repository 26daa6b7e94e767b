"""Text agents wrote is shown by the CLI, never obeyed (services/cli/output.py ``visible``): an
escape sequence, a carriage return, a C1 control or a bidi override in a name, a message or a
reason is written out as its escape, in tables, in lines and in error lines, with the columns
still aligned; ordinary Unicode is left alone, and JSON stays exact."""

from __future__ import annotations

import io
import json
import logging
import re
import sys

import pytest
from rich.cells import cell_len
from rich.console import Console

from fleetward.services.cli import main
from fleetward.services.cli.output import (
    Column,
    Listing,
    LogLines,
    Terminal,
    page_of,
    show,
    show_one,
    shown,
    visible,
)
from fleetward.services.errors import FleetwardError

# what a hostile agent may put in any text field it publishes
CLEAR = "\x1b[2J\x1b[H"  # clear the screen, cursor home
TITLE = "\x1b]0;owned\x07"  # OSC 0: the terminal's title
LINK = "\x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\"  # OSC 8: a hyperlink
OVERWRITE = "paused\r\x1b[1Aactive\x08\x08"  # CR, cursor up, backspaces
C1 = "\x9b2J\x9d0;t\x9c"  # CSI, OSC and ST in one byte each
BIDI = "\u202etxt.exe\u202c\u2066x\u2069\u200e\u200f\u061c"
HOSTILE = (CLEAR, TITLE, LINK, OVERWRITE, C1, BIDI, "a\nb\tc\x00\x7f", "line\u2028sep\u2029")
ORDINARY = (
    "Zoë Ångström, façade", "数据代理 エージェント", "🤖 agent 🚀", "👩‍💻 dev",  # ZWJ sequence
    "🏴󠁧󠁢󠁳󠁣󠁴󠁿",  # a flag of tag characters
    "العربية עברית", "C:\\temp\\x1b is only text", "[bold]x[/bold] :smile:", "no\u00a0break",
)  # fmt: skip
UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def test_visible_writes_every_control_character_out_as_its_escape() -> None:
    assert visible(CLEAR) == r"\x1b[2J\x1b[H"
    assert visible(TITLE) == r"\x1b]0;owned\x07"
    assert visible(LINK) == "\\x1b]8;;https://evil.example\\x1b\\click\\x1b]8;;\\x1b\\"
    assert visible(OVERWRITE) == r"paused\r\x1b[1Aactive\x08\x08"
    assert visible(C1) == r"\x9b2J\x9d0;t\x9c"
    assert visible(BIDI) == r"\u202etxt.exe\u202c\u2066x\u2069\u200e\u200f\u061c"
    assert visible("a\nb\tc\x00\x7f") == r"a\nb\tc\x00\x7f"
    assert visible("line\u2028sep\u2029") == r"line\u2028sep\u2029"
    assert visible("lone \ud800") == r"lone \ud800"  # no terminal encoding can write it
    assert visible("a\nb\rc", lines=True) == "a\n" + r"b\rc"  # text of several lines
    for text in HOSTILE:
        assert not UNSAFE.search(visible(text)) and "\n" not in visible(text), text
        assert visible(visible(text)) == visible(text)  # shown once, shown the same


def test_visible_leaves_ordinary_text_alone() -> None:
    for text in ORDINARY:
        assert visible(text) == text
        assert visible(text, lines=True) == text


def _table_lines(console: Console, listing: Listing, rows: list[dict[str, str]]) -> list[str]:
    show(console, listing, page_of(rows), as_json=False)
    assert isinstance(console.file, io.StringIO)
    return console.file.getvalue().splitlines()


@pytest.mark.parametrize("kind", [Console, Terminal])
def test_a_table_shows_hostile_cells_escaped_with_its_columns_aligned(kind: type[Console]) -> None:
    """Any console (the tests' plain one, the CLI's ``Terminal``): every cell is made visible
    before rich measures it, and never read as markup (a link, a stray closing tag)."""
    listing = Listing("agents", (Column("agent_id", whole=True), Column("team"),
                                 Column("status")))  # fmt: skip
    teams = [*HOSTILE, *ORDINARY, "[link=https://evil.example]x[/link]", "[/bold]"]
    rows = [{"agent_id": f"a-{i}", "team": t, "status": "paused"} for i, t in enumerate(teams)]
    lines = _table_lines(kind(file=io.StringIO(), width=400), listing, rows)
    out = "\n".join(lines)
    assert not UNSAFE.search(out), repr(out)
    for team in teams:
        assert visible(team) in out, team
    assert "evil.example]x[/link]" in out and "[/bold]" in out  # shown, not obeyed
    body = lines[1:]  # under the title
    assert len(body) == len(rows) + 4  # top, header, rule, a line per row, bottom: none split
    assert len({cell_len(line) for line in body}) == 1, body  # every line as wide


def test_a_cell_keeps_its_style_and_shows_what_it_quotes() -> None:
    console = Terminal(file=io.StringIO(), width=200, force_terminal=True, color_system="standard")
    console.print(shown(("no", "red"), f": {CLEAR}{TITLE}"))
    assert isinstance(console.file, io.StringIO)
    out = console.file.getvalue()
    assert "\x1b[31mno\x1b[0m" in out  # rich's own style
    assert re.sub(r"\x1b\[[0-9;]*m", "", out) == r"no: \x1b[2J\x1b[H\x1b]0;owned\x07" + "\n"


def test_the_terminal_prints_any_string_visible_and_reads_no_markup() -> None:
    console = Terminal(file=io.StringIO(), width=200)
    console.print(f"agent says {TITLE}{OVERWRITE} [red]x[/red] [/bold] :smile:\nnext line")
    assert isinstance(console.file, io.StringIO)
    assert console.file.getvalue() == (
        r"agent says \x1b]0;owned\x07paused\r\x1b[1Aactive\x08\x08 [red]x[/red] [/bold] :smile:"
        "\nnext line\n"
    )


def test_one_things_lines_stay_one_line_each(capsys: pytest.CaptureFixture[str]) -> None:
    row = {"agent_id": "a-1", "message": f"busy\nstatus     active{CLEAR}"}
    lines = [shown(("a-1", "bold"), " Agent"), f"doing now  idle - {row['message']}"]
    show_one(Console(width=200), row, lines, as_json=False)
    assert capsys.readouterr().out == (
        "a-1 Agent\n" + r"doing now  idle - busy\nstatus     active\x1b[2J\x1b[H" + "\n"
    )


def test_json_keeps_what_agents_wrote_exactly(capsys: pytest.CaptureFixture[str]) -> None:
    listing = Listing("agents", (Column("agent_id"), Column("team")))
    rows = [{"agent_id": "a-1", "team": "".join(HOSTILE)}, {"agent_id": "a-2", "team": "数据 🤖"}]
    show(Terminal(width=200), listing, page_of(rows), as_json=True)
    out = capsys.readouterr().out
    assert out.isascii() and out.count("\n") == 1  # JSON escapes control characters itself
    assert json.loads(out)["rows"] == rows
    show_one(Terminal(width=200), rows[0], ["-"], as_json=True)
    assert json.loads(capsys.readouterr().out) == rows[0]


def test_an_error_line_quoting_an_agent_stays_one_visible_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_: object) -> int:
        raise FleetwardError(f"task t1 is held by {OVERWRITE}\nfleetward: ok")

    monkeypatch.setattr(main, "_dispatch", refuse)
    assert main.main(["status"]) == 2
    err = capsys.readouterr().err
    assert err == (
        r"fleetward: error: task t1 is held by paused\r\x1b[1Aactive\x08\x08\nfleetward: ok" + "\n"
    )


def test_a_log_line_quoting_an_agent_is_shown_with_its_traceback_whole() -> None:
    try:
        raise ValueError(f"bad tool {C1}")
    except ValueError:
        record = logging.LogRecord("watchdog", logging.ERROR, __file__, 1, "escalation %s: %s",
                                   ("e-1", TITLE), exc_info=sys.exc_info())  # fmt: skip
    line = LogLines("%(levelname)s %(message)s").format(record)
    assert line.startswith(r"ERROR escalation e-1: \x1b]0;owned\x07" + "\nTraceback")
    assert line.endswith(r"ValueError: bad tool \x9b2J\x9d0;t\x9c")
    assert not UNSAFE.search(line)
