"""Settings, read once from the environment. Kept apart from the loops that use them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from schemas.streams import DEFAULT_AUDIT_RETENTION_DAYS
from services.errors import FleetwardError


@dataclass(frozen=True, slots=True)
class Settings:
    nats_url: str | None  # None: start an embedded nats-server
    database_url: str | None  # None: start an embedded Postgres
    home: Path  # where embedded servers keep their data
    retention_days: float  # FW_EVENTS retention; 0 keeps events forever
    metrics_host: str
    metrics_port: int  # 0: pick a free port
    batch_size: int

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        return cls(
            nats_url=env.get("FLEETWARD_NATS_URL") or None,
            database_url=env.get("FLEETWARD_DATABASE_URL") or None,
            home=Path(env.get("FLEETWARD_HOME", ".fleetward")).resolve(),
            retention_days=_number(env, "FLEETWARD_RETENTION_DAYS", DEFAULT_AUDIT_RETENTION_DAYS),
            metrics_host=env.get("FLEETWARD_METRICS_HOST", "127.0.0.1"),
            metrics_port=int(_number(env, "FLEETWARD_METRICS_PORT", 0)),
            batch_size=int(_number(env, "FLEETWARD_BATCH_SIZE", 1000)),
        )


def _number(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise FleetwardError(
            f"{name}={raw!r} is not a number; set it to a number or unset it"
        ) from None
    if value < 0:
        raise FleetwardError(f"{name}={raw!r} is negative; set it to 0 or more")
    return value
