"""Leases: one active writer per projection, the others standing by (DESIGN 3.5).

A runner writes only while its ``Lease`` holds the session-level advisory lock of every
projection it feeds (one key per projection, so two processes that group projections
differently, ``--only``, still never write one together), taken all or none on a connection of
its own, never the pool's.

Invariants:
- Every commit checks, in its own transaction, that the lease session still holds the locks
  (``fence``): a process that lost its lease, noticed or not, commits nothing more.
- The locks end with their session. A process killed (SIGKILL) closes its socket: Postgres ends
  the session and frees the locks at once. A host that vanishes without a word is found by TCP
  keepalives (``SERVER_SETTINGS``: about 11 s); its holder, cut off, has given the lease up
  before then: it pings every ``PING_S`` and lets go when a ping fails or takes ``PING_TIMEOUT_S``.
- A standby tries again every ``RETRY_S``; it never keeps some of the locks.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from collections.abc import Iterable
from typing import Final

import anyio
import asyncpg

from fleetward.services.db import Conn, q

log = logging.getLogger("fleetward.projector")

RETRY_S: Final = 1.0  # a standby tries to take the lease this often
PING_S: Final = 1.0  # the holder checks its lease session this often
PING_TIMEOUT_S: Final = 3.0  # a ping slower than this loses the lease (well before keepalives)
SERVER_SETTINGS: Final = {
    "application_name": "fleetward projector lease",
    # a client host gone silent ends the session after 5 + 3 x 2 s (ignored on a Unix socket,
    # where a dead client is seen at once)
    "tcp_keepalives_idle": "5",
    "tcp_keepalives_interval": "2",
    "tcp_keepalives_count": "3",
    # the lease session idles between pings: a server-wide idle timeout must not end it
    "idle_session_timeout": "0",
}


class LeaseLost(Exception):
    """This process no longer holds (or may no longer hold) the lease: it must stop writing."""


def lock_key(projection: str) -> int:
    """The advisory lock key of ``projection``: 63 bits of a hash of its name (non-negative, so
    pg_locks shows it as classid << 32 | objid)."""
    digest = hashlib.blake2b(f"fleetward.projection:{projection}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big") >> 1


def this_process() -> tuple[str, int]:
    return socket.gethostname(), os.getpid()


class Lease:
    """The right to write ``projections`` (fed by the durable consumer ``durable``), held by
    this process on its own Postgres session while ``held``."""

    def __init__(self, database_url: str, durable: str, projections: Iterable[str]) -> None:
        self.database_url, self.durable = database_url, durable
        self.projections = sorted(projections)
        self.keys = [lock_key(p) for p in self.projections]
        self.held = False
        self._conn: asyncpg.Connection | None = None
        self._backend = 0  # the lease session's pid on the server

    async def try_take(self) -> bool:
        """Take every lock, or none; True when this process now holds the lease. Raises what
        asyncpg raises when Postgres cannot be reached (the next try connects again)."""
        if self.held:
            return True
        conn = await self._connected()
        taken = [bool(r[0]) for r in await conn.fetch(q("lease_try"), self.keys)]
        if all(taken):
            self.held = True
            return True
        if any(taken):
            some = [k for k, t in zip(self.keys, taken, strict=True) if t]
            await conn.fetch(q("lease_unlock"), some)
        return False

    async def holders(self) -> list[str]:
        """The processes (``host pid N``) whose lease sessions hold any of these locks."""
        conn = await self._connected()
        rows = await conn.fetch(q("lease_sessions"))
        return [
            f"{r['host']} pid {r['pid']}"
            for r in rows
            if r["active"] and set(r["projections"]) & set(self.projections)
        ]

    async def keep(self) -> None:
        """While held: ping the lease session every ``PING_S``; return once the lease is lost
        (the ping failed or was too slow: the session is closed, so it frees the locks if it
        still held them)."""
        while self.held:
            await anyio.sleep(PING_S)
            conn = self._conn
            try:
                assert conn is not None
                with anyio.fail_after(PING_TIMEOUT_S):
                    await conn.fetchval("SELECT 1")
            except Exception as exc:  # the session is gone, or too slow to trust
                self.lose(f"{type(exc).__name__}: {exc}")

    async def fence(self, conn: Conn) -> None:
        """Inside a writer's transaction: raise ``LeaseLost`` unless the lease session holds
        every lock now."""
        held = self.held and await conn.fetchval(q("lease_fence"), self.keys, self._backend)
        if held != len(self.keys):
            raise self.fenced_out()

    def fence_of(self) -> tuple[list[int], int]:
        """What a commit checks in its own transaction, as ``fence`` does (commit.py
        ``commit_windows``): these lock keys, held by this backend pid. Raises ``LeaseLost``
        when this process does not hold the lease now."""
        if not self.held:
            raise LeaseLost(f"not holding the lease of {', '.join(self.projections)}")
        return self.keys, self._backend

    def fenced_out(self) -> LeaseLost:
        """A commit found the locks gone: stop holding; the error to raise."""
        self.lose("the lease session no longer holds the locks")
        return LeaseLost(f"lost the lease of {', '.join(self.projections)}")

    def lose(self, why: str) -> None:
        """Stop holding: close the lease session (its locks go with it)."""
        if self.held:
            log.warning("lease of %s lost: %s", ", ".join(self.projections), why)
        self.held = False
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    async def close(self) -> None:
        """Give the lease up (a standby takes it at its next try)."""
        self.held = False
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                with anyio.fail_after(5):
                    await conn.close()
            except Exception:  # closing anyway: the session's end frees the locks
                conn.terminate()

    async def _connected(self) -> asyncpg.Connection:
        if self._conn is not None and not self._conn.is_closed():
            return self._conn
        conn = await asyncpg.connect(
            self.database_url, timeout=5, server_settings=dict(SERVER_SETTINGS)
        )
        try:
            host, pid = this_process()
            await conn.execute(
                q("lease_register"), self.durable, self.projections, self.keys, host, pid
            )
        except BaseException:
            conn.terminate()
            raise
        self._conn, self._backend = conn, conn.get_server_pid()
        conn.add_termination_listener(self._ended)
        return conn

    def _ended(self, conn: object) -> None:
        if conn is self._conn:  # not one this lease closed itself
            self.lose("the lease session ended")
