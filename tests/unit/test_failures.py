"""Commit failures sorted by what they call for (services/projector/failures.py), and text made
storable for a dead letter (schemas/bounds.py)."""

from __future__ import annotations

import asyncpg
import pytest

from fleetward.schemas.bounds import storable
from fleetward.services.projector.failures import classify, describe, needs_operator


def postgres(exc_type: type[asyncpg.PostgresError], sqlstate: str) -> asyncpg.PostgresError:
    exc = exc_type("refused")
    exc.sqlstate = sqlstate  # type: ignore[misc]  # as the driver sets it from the server
    return exc


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (postgres(asyncpg.ConnectionFailureError, "08006"), "heals"),
        (postgres(asyncpg.AdminShutdownError, "57P01"), "heals"),
        (postgres(asyncpg.CannotConnectNowError, "57P03"), "heals"),
        (postgres(asyncpg.SerializationError, "40001"), "heals"),
        (postgres(asyncpg.DeadlockDetectedError, "40P01"), "heals"),
        (postgres(asyncpg.TooManyConnectionsError, "53300"), "heals"),
        (postgres(asyncpg.QueryCanceledError, "57014"), "heals"),
        (postgres(asyncpg.ReadOnlySQLTransactionError, "25006"), "heals"),
        (asyncpg.ConnectionDoesNotExistError("connection was closed"), "heals"),
        (ConnectionResetError("reset by peer"), "heals"),
        (TimeoutError(), "heals"),
        (postgres(asyncpg.CharacterNotInRepertoireError, "22021"), "event"),
        (postgres(asyncpg.NumericValueOutOfRangeError, "22003"), "event"),
        (postgres(asyncpg.StringDataRightTruncationError, "22001"), "event"),
        (postgres(asyncpg.CheckViolationError, "23514"), "event"),
        (postgres(asyncpg.ProgramLimitExceededError, "54000"), "event"),
        (OverflowError("value out of int32 range"), "event"),
        (UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"), "event"),
        (ValueError("cannot encode Decimal value into numeric"), "event"),
        (KeyError("a column"), "event"),
        (postgres(asyncpg.UndefinedTableError, "42P01"), "system"),
        (postgres(asyncpg.InsufficientPrivilegeError, "42501"), "system"),
        (postgres(asyncpg.InternalServerError, "XX000"), "system"),
        (RuntimeError("something else"), "system"),
    ],
)
def test_each_failure_is_classified(exc: BaseException, expected: str) -> None:
    assert classify(exc) == expected


def test_only_postgres_errors_no_event_caused_need_an_operator() -> None:
    assert needs_operator(postgres(asyncpg.UndefinedTableError, "42P01"))
    assert not needs_operator(postgres(asyncpg.AdminShutdownError, "57P01"))
    assert not needs_operator(postgres(asyncpg.CharacterNotInRepertoireError, "22021"))
    assert not needs_operator(RuntimeError("NATS went away"))


def test_describe_names_the_error_and_where() -> None:
    exc = OverflowError("value out of int32 range")
    exc.add_note("writing fleetward.tasks")
    assert describe(exc) == "OverflowError: value out of int32 range (writing fleetward.tasks)"
    assert len(describe(ValueError("x" * 5000))) == 2000


def test_storable_escapes_nul_and_lone_surrogates_only() -> None:
    assert storable("plain é ✓ 🚀") == "plain é ✓ 🚀"
    assert storable("a\x00b") == "a\\x00b"
    assert storable("fw.agent.a1\x00x") == "fw.agent.a1\\x00x"
    assert storable("x\ud800y") == "x\\ud800y"
    assert storable("\x00\udfff") == "\\x00\\udfff"
    for text in ("a\x00b", "x\ud800y", "\x00\udfff"):
        stored = storable(text)
        assert "\x00" not in stored
        stored.encode("utf-8")  # no lone surrogate left
