"""Why a window's commit failed, and what that calls for (DESIGN 3.6). Pure.

- ``heals``: the database or the way to it is away or busy (a lost connection, a server shutting
  down, a serialization failure or deadlock, too many connections). Retrying the same window
  later succeeds: the runner re-positions and tries again.
- ``event``: the values written were refused (a NUL in a text column, an integer past its
  column's range, an overflowing sum, a broken constraint), by Postgres or by the driver
  encoding them. Retrying can never succeed: the runner finds the events responsible by
  bisecting the window and dead-letters them (``projection_error``).
- ``system``: anything else (a missing table or column, a privilege, an internal error). No
  event caused it, so none is dead-lettered: the runner retries after a pause, and its health
  turns bad until an operator fixes the cause.
"""

from __future__ import annotations

from typing import Final, Literal

import asyncpg

Failure = Literal["heals", "event", "system"]

# SQLSTATE classes and codes (https://www.postgresql.org/docs/current/errcodes-appendix.html)
HEALING_STATES: Final = (
    "08",  # connection exception
    "40",  # transaction rollback: serialization failure, deadlock
    "53",  # insufficient resources: too many connections, out of memory, disk full
    "57P",  # operator intervention: admin or crash shutdown, cannot connect now
    "57014",  # query cancelled (by an operator, or a statement timeout)
    "25006",  # read-only transaction: a standby, during a failover
    "55P03",  # lock not available
)
EVENT_STATES: Final = (
    "22",  # data exception: bad encoding, numeric or datetime out of range, string too long
    "23",  # integrity constraint violation: not null, unique, check, foreign key
    "54",  # program limit exceeded: e.g. a value too large for an index row
)
# raised by the driver while encoding a value the column cannot hold (the server never saw it):
# OverflowError (int out of range), UnicodeEncodeError (lone surrogate), ValueError (a Decimal
# too large for numeric), TypeError (a value of the wrong type), KeyError (a row lacking a
# column: a fold's bug that only some events trigger)
ENCODING_ERRORS: Final = (ArithmeticError, ValueError, TypeError, LookupError)
HEALING_ERRORS: Final = (OSError, TimeoutError, asyncpg.InterfaceError)


def classify(exc: BaseException) -> Failure:
    """What a failed commit calls for: ``heals`` (retry the window), ``event`` (bisect it and
    dead-letter the culprits) or ``system`` (retry after a pause; an operator must act)."""
    if isinstance(exc, asyncpg.PostgresError):
        state = str(getattr(exc, "sqlstate", "") or "")
        if state.startswith(HEALING_STATES):
            return "heals"
        if state.startswith(EVENT_STATES):
            return "event"
        return "system"
    if isinstance(exc, HEALING_ERRORS):  # connection closed, lost or timed out
        return "heals"
    if isinstance(exc, ENCODING_ERRORS):
        return "event"
    return "system"


def needs_operator(exc: BaseException) -> bool:
    """A Postgres error no event caused and no wait cures (a missing table, a privilege): worth
    an error in the log, not a warning."""
    return isinstance(exc, asyncpg.PostgresError) and classify(exc) == "system"


def describe(exc: BaseException, limit: int = 2000) -> str:
    """An error as a dead letter's detail: its type, message and notes (e.g. the table being
    written), at most ``limit`` characters (still to be made storable: it may quote the refused
    value)."""
    notes = getattr(exc, "__notes__", None)
    where = f" ({'; '.join(notes)})" if notes else ""
    return f"{type(exc).__name__}: {exc}{where}"[:limit]
