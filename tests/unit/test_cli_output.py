"""How the CLI prints for scripts and people (services/cli/output.py), and where it looks for
the running Fleetward (FLEETWARD_HOME's per-user default), without any server."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from rich.console import Console

from fleetward.services.cli.output import Column, Listing, Page, cut_off, plain, record, show
from fleetward.services.config import Settings, default_home


def test_json_values_money_as_decimal_strings_times_in_utc() -> None:
    paris = timezone(timedelta(hours=1))
    row = {
        "cost_usd": Decimal("0.412000"), "cost_today": Decimal("3"), "usd": Decimal("1.5"),
        "max_cost_usd": 0.25, "spend_today": Decimal("0"), "runs": Decimal("22"),
        "busy_s": Decimal("1.5"), "success_rate": 0.5,
        "raised_at": datetime(2026, 3, 14, 10, 0, 0, 500_000, tzinfo=paris),
        "day": date(2026, 3, 14), "age": timedelta(minutes=2), "tools": ["a", "b"],
        "agent_id": "a-1", "task_id": None,
    }  # fmt: skip
    assert record(row) == {
        "cost_usd": "0.412000", "cost_today": "3", "usd": "1.5", "max_cost_usd": "0.25",
        "spend_today": "0", "runs": 22, "busy_s": 1.5, "success_rate": 0.5,
        "raised_at": "2026-03-14T09:00:00.500000Z", "day": "2026-03-14", "age": 120.0,
        "tools": ["a", "b"], "agent_id": "a-1", "task_id": None,
    }  # fmt: skip
    assert plain("at", datetime(2026, 1, 1)) == "2026-01-01T00:00:00Z"  # naive: UTC


LISTING = Listing(
    "agents",
    (Column("agent_id", whole=True), Column("cost_today", lambda r: f"${r['cost_today']}")),
)
ROWS = [{"agent_id": f"a-{i}", "cost_today": Decimal(i)} for i in range(3)]


def test_a_cut_off_listing_says_so_as_a_table_and_as_json(
    capsys: pytest.CaptureFixture[str],
) -> None:
    page = Page(ROWS, 2_345, 3)
    assert cut_off(page) == "showing 3 of 2,345 (--limit N for more)"
    assert cut_off(Page(ROWS, 3, 3)) is None
    console = Console(width=100)
    show(console, LISTING, page, as_json=False)
    table = capsys.readouterr().out
    assert "agent_id" in table and "$2" in table
    assert table.rstrip().endswith("showing 3 of 2,345 (--limit N for more)")
    show(console, LISTING, page, as_json=True, meta={"by": "agent"})
    doc = json.loads(capsys.readouterr().out)
    assert doc == {"by": "agent", "rows": [{"agent_id": f"a-{i}", "cost_today": str(i)}
                                           for i in range(3)],
                   "total": 2_345, "truncated": True}  # fmt: skip


def test_fleetward_home_defaults_to_the_per_user_state_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert default_home() == tmp_path / "state" / "fleetward"
    (tmp_path / "elsewhere").mkdir()
    for folder in (tmp_path, tmp_path / "elsewhere"):  # the same from any working folder
        monkeypatch.chdir(folder)
        assert Settings.from_env({}).home == tmp_path / "state" / "fleetward"
    assert not (tmp_path / "state").exists()  # found, never made, by reading the settings
    chosen = Settings.from_env({"FLEETWARD_HOME": "~/fw"}).home
    assert chosen == Path.home() / "fw"


def test_no_test_reaches_the_real_per_user_folder() -> None:
    """tests/conftest.py ``no_real_home``: the CLI run in a test never finds a real Fleetward."""
    real = Path.home() / ".local" / "state" / "fleetward"
    assert Settings.from_env().home != real and default_home() != real


def test_when_utc_is_named_it_is_kept() -> None:
    assert plain("at", datetime(2026, 1, 1, tzinfo=UTC)) == "2026-01-01T00:00:00Z"


def test_a_reader_that_stops_reading_ends_the_command_quietly() -> None:
    """``fleetward audit export | head``: the pipe's reader goes away mid-output; the command
    exits 141 (128 + SIGPIPE) without a traceback."""
    script = (
        "import sys\n"
        "from fleetward.services.cli import main\n"
        "def flood(settings, args):\n"
        "    for _ in range(100_000):\n"
        "        print('x' * 1000)\n"
        "    return 0\n"
        "main._dispatch = flood\n"
        "sys.exit(main.main(['status']))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.read(10) == b"x" * 10
    proc.stdout.close()  # as head does once it has its bytes
    assert proc.wait(60) == 141
    with proc.stderr:
        assert b"Traceback" not in proc.stderr.read()
