"""The CLI's parser, without any server (issue 17, part 4): every command, action and flag has
help; a bad value is one line ``fleetward: error: ...`` and exit 2 (no usage block, no
traceback), before anything connects; ``--version`` prints the package's version."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from importlib.metadata import version

import pytest

from fleetward.services.cli.main import main, parser


def _walk(p: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.Action]]:
    for action in p._actions:
        yield p.prog, action
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                yield f"{p.prog} {choice.dest}", choice
            for sub in action.choices.values():
                yield from _walk(sub)


def test_every_command_action_and_flag_has_help() -> None:
    missing = [
        f"{prog}: {action.option_strings or action.dest}"
        for prog, action in _walk(parser())
        if not action.help or action.help == argparse.SUPPRESS
    ]
    assert missing == []


def test_the_walk_finds_the_actions_and_flags_it_checks() -> None:
    """The test above can fail: it sees nested actions' flags and positionals."""
    seen = {(prog, tuple(a.option_strings) or a.dest) for prog, a in _walk(parser())}
    assert ("fleetward tasks show", ("--json",)) in seen
    assert ("fleetward tasks show", "task_id") in seen
    assert ("fleetward budgets set", ("--limit-usd",)) in seen
    assert ("fleetward agents register", "agent_id") in seen


BAD = [
    (["agents", "--limit", "-1"], "argument --limit: '-1' is not a whole number from 1"),
    (["agents", "--limit", "0"], "argument --limit: '0' is not a whole number from 1"),
    (["tasks", "--limit", "99999999999999999999"], "is not a whole number from 1 to 10,000"),
    (["escalations", "--limit", "ten"], "argument --limit: 'ten' is not a whole number"),
    (["approvals", "--limit", "-1"], "argument --limit"),
    (["kpis", "--limit", "-5"], "'-5' is not a whole number from 0 (all) to 10,000"),
    (["tasks", "--status", "finished"], "argument --status: invalid choice: 'finished'"),
    (["people", "grant", "ann", "wizard"], "argument role: invalid choice: 'wizard'"),
    (["projections", "rebuild", "nope"], "argument NAME: invalid choice: 'nope'"),
    (["budgets", "set", "b1", "--scope", "team", "--scope-id", "ops", "--window", "day",
      "--limit-usd", "ten"], "argument --limit-usd: 'ten' is not an amount of USD"),
    (["budgets", "set", "b1", "--scope", "team", "--scope-id", "ops", "--window", "day",
      "--limit-usd", "-3"], "'-3' is not an amount of USD"),
    (["budgets", "set", "b1", "--scope", "team", "--scope-id", "ops", "--window", "day",
      "--limit-usd", "1.0000001"], "'1.0000001' has more than 6 decimals"),
    (["budgets", "set", "b1", "--scope", "team", "--scope-id", "ops", "--window", "day",
      "--limit-usd", "nan"], "'nan' is not an amount of USD"),
    (["budgets", "set", "b1", "--scope", "team", "--scope-id", "ops", "--window", "day",
      "--limit-usd", "1e400"], "'1e400' is not an amount of USD"),
    (["budgets", "set", "b1", "--scope", "team", "--scope-id", "ops", "--window", "day",
      "--limit-usd", "5", "--warn-at", "2"], "'2' is not a share above 0 and at most 1"),
    (["policies", "set", "--scope", "team", "--scope-id", "ops", "--max-cost-usd", "$5"],
     "'$5' is not an amount of USD"),
    (["tasks", "show", "no such/id"], "'no such/id' is not a valid task id"),
    (["tasks", "assign", "t-1", "a.b"], "'a.b' is not a valid agent id"),
    (["agents", "pause", "x" * 65], "is not a valid agent id"),
    (["agent", ""], "'' is not a valid agent id"),
    (["tasks", "create", "t-1", "--project", "p", "--title", "x", "--sla", "-1"],
     "'-1' is not a number of seconds"),
    (["agents", "register", "a-1", "--max-tasks", "0"], "'0' is not a whole number from 1"),
    (["review", "--idle-days", "0"], "'0' is not a whole number from 1"),
    (["simulate", "--agents", "1000001"], "is not a whole number from 1 to 100,000"),
    (["nope"], "argument COMMAND: invalid choice: 'nope'"),
    (["tasks", "frobnicate"], "argument ACTION: invalid choice: 'frobnicate'"),
    (["agents", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    ([], "the following arguments are required: COMMAND"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "said"), BAD, ids=[" ".join(a)[:60] for a, _ in BAD])
def test_a_bad_value_is_one_line_and_exit_2(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("fleetward: error: "), err
    assert said in lines[0], err
    assert "usage:" not in err and "Traceback" not in err and out == ""


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"fleetward {version('fleetward')}\n"


def test_help_still_prints_usage_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["agents", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: fleetward agents") and "--json" in out and "--limit N" in out
