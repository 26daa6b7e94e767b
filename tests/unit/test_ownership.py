"""One owner per data folder (services/runtime/ownership.py): a second owner is refused with
the holder named; the lock is free again once its holder is gone, however it went."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fleetward.services.errors import FleetwardError
from fleetward.services.runtime.ownership import LOCK_FILE, FolderLock

HINT = "stop that one first"


def test_a_held_folder_refuses_a_second_owner_naming_the_holder(tmp_path: Path) -> None:
    first = FolderLock.take(tmp_path / "home", hint=HINT)
    try:
        with pytest.raises(FleetwardError) as refused:
            FolderLock.take(tmp_path / "home", hint=HINT)
        assert str(refused.value).startswith(
            f"{tmp_path / 'home'} is in use by pid {os.getpid()} ("
        )
        assert str(refused.value).endswith(f"): {HINT}")
        assert "\n" not in str(refused.value)
        assert FolderLock.take_abandoned(tmp_path / "home") is None
    finally:
        first.release()
    again = FolderLock.take_abandoned(tmp_path / "home")
    assert again is not None
    again.release()


def test_the_lock_of_an_exited_holder_is_free_and_a_lockless_folder_is_not_owned(
    tmp_path: Path,
) -> None:
    hold = "import sys, pathlib; from fleetward.services.runtime.ownership import FolderLock\n"
    hold += "FolderLock.create(pathlib.Path(sys.argv[1])); sys.exit(0)"  # exits without release
    (tmp_path / "made").mkdir()
    subprocess.run([sys.executable, "-c", hold, str(tmp_path / "made")], check=True)
    assert (tmp_path / "made" / LOCK_FILE).exists()
    lock = FolderLock.take_abandoned(tmp_path / "made")
    assert lock is not None
    lock.release()

    (tmp_path / "lockless").mkdir()
    assert FolderLock.take_abandoned(tmp_path / "lockless") is None
    assert not (tmp_path / "lockless" / LOCK_FILE).exists()
