"""Arguments the CLI refuses before it connects anywhere: one line, exit 2 (a newcomer met a
traceback from ``fleetward approvals --limit -1``: Postgres refused a negative LIMIT)."""

from __future__ import annotations

import pytest

from fleetward.services.cli.main import main


@pytest.mark.parametrize("limit", ["-1", "0", "99999999999999999999"])
def test_approvals_refuses_a_limit_out_of_range(
    limit: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["approvals", "--limit", limit]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--limit" in err[0], err


@pytest.mark.parametrize(
    "args",
    [["--partition", "2/2"], ["--partition", "x"], ["--partition", "0/2", "--only", "tasks"]],
)
def test_projector_refuses_a_partition_it_cannot_run(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["projector", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--partition" in err[0], err
