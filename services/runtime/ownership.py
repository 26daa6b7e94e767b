"""One owner per data folder: the process that runs the embedded servers of a folder
(``fleetward dev`` on ``FLEETWARD_HOME``, a test session on its own folder) holds an exclusive
``flock`` on ``<folder>/fleetward.lock`` for as long as it lives.

The kernel drops the lock when the holder dies, however it dies (SIGKILL included), so "the
lock can be taken" means "no live owner": servers still running in the folder then are
orphans, safe to stop (``orphans.py``). The file also names the holder (its pid and command
line), for the refusal a second owner gets. Never inherited by children (``O_CLOEXEC``): an
orphaned server must not keep its dead owner's lock.
"""

from __future__ import annotations

import fcntl
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from fleetward.services.errors import FleetwardError

LOCK_FILE = "fleetward.lock"


@dataclass
class FolderLock:
    """The held lock of ``folder`` (``take``); ``release`` (or the process's death) frees it."""

    folder: Path
    fd: int

    @classmethod
    def take(cls, folder: Path, *, hint: str) -> FolderLock:
        """Own ``folder`` (created if missing): the lock is taken without waiting. Raises
        ``FleetwardError`` naming the holder (pid, command line) and ``hint`` (what to do) when
        a live process holds it."""
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        if not _lock(fd):
            os.close(fd)
            raise FleetwardError(f"{folder} is in use by {holder(folder)}: {hint}")
        return cls._owned(folder, fd)

    @classmethod
    def create(cls, folder: Path) -> FolderLock:
        """Own the new, empty ``folder``: its lock file appears already held (written under
        another name, locked, then renamed), so a sweeper that finds it can never take it
        from a live owner in between."""
        fresh = folder / f".{LOCK_FILE}.{os.getpid()}"
        fd = os.open(fresh, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        if not _lock(fd):  # nobody else knows the name
            os.close(fd)
            raise FleetwardError(f"cannot lock {fresh}")
        os.rename(fresh, folder / LOCK_FILE)
        return cls._owned(folder, fd)

    @classmethod
    def take_abandoned(cls, folder: Path) -> FolderLock | None:
        """The lock of ``folder`` if it has a lock file and no live holder; else None (a
        folder without one is not an owned folder, or is being created)."""
        try:
            fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        if not _lock(fd):
            os.close(fd)
            return None
        return cls._owned(folder, fd)

    @classmethod
    def _owned(cls, folder: Path, fd: int) -> FolderLock:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n{_command()}\n".encode(), 0)
        return cls(folder=folder, fd=fd)

    def release(self) -> None:
        """Free the lock (the file stays: its next owner takes the same one)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def holder(folder: Path) -> str:
    """Who the lock file of ``folder`` names: ``pid N (command line)``, as far as it says."""
    try:
        pid, _, command = (folder / LOCK_FILE).read_text().partition("\n")
    except OSError:
        return "another process"
    command = command.strip()
    return f"pid {pid.strip()} ({command})" if command else f"pid {pid.strip() or '?'}"


def _command() -> str:
    """This process's command line as typed (``python -m ...`` included), its program by name."""
    argv = sys.orig_argv or sys.argv
    return " ".join([Path(argv[0]).name, *argv[1:]]) if argv else "?"


def _lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
