"""The deployment material is valid: nats-server itself checks the configuration files."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from fleetward.services.auth.store import AuthStore
from fleetward.services.runtime.embedded import nats_server_binary
from tests.cluster import node_env

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@pytest.mark.parametrize("conf", sorted(p.name for p in (DEPLOY / "nats").glob("*.conf")))
def test_nats_configuration_is_accepted_by_nats_server(conf: str, tmp_path: Path) -> None:
    """With the nats-auth.conf that ``fleetward auth init`` writes beside it (and a cluster
    node's environment: tests/cluster.py starts three of that file)."""
    shutil.copy(DEPLOY / "nats" / conf, tmp_path / conf)
    store = AuthStore(tmp_path / "keys").init()
    (tmp_path / "nats-auth.conf").write_text(store.server_config(tmp_path / "accounts"))
    checked = subprocess.run(
        [nats_server_binary(), "-t", "-c", str(tmp_path / conf)],
        env=os.environ | node_env("fw-1", tmp_path, 14222, 16222, [16222, 16223, 16224]),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr + checked.stdout
