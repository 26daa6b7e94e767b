"""The deployment material is valid: nats-server itself checks the configuration files."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from fleetward.services.runtime.embedded import nats_server_binary

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@pytest.mark.parametrize("conf", sorted(p.name for p in (DEPLOY / "nats").glob("*.conf")))
def test_nats_configuration_is_accepted_by_nats_server(conf: str) -> None:
    checked = subprocess.run(
        [nats_server_binary(), "-t", "-c", str(DEPLOY / "nats" / conf)],
        env=os.environ | {"NODE_NAME": "fw-1"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr + checked.stdout
