"""Settings, read once from the environment. Kept apart from the loops that use them."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from platformdirs import user_state_dir

from fleetward.schemas import partitions
from fleetward.schemas.bounds import MAX_SEAL_PERIOD_S, MIN_SEAL_PERIOD_S
from fleetward.schemas.streams import DEFAULT_AUDIT_RETENTION_DAYS
from fleetward.services.errors import FleetwardError

DEFAULT_HEARTBEAT_INTERVAL_S = 60.0  # AgentRegistered.heartbeat_interval_s's default
DEFAULT_STALL_S = 60.0  # a projection holding events this long without a commit is stalled
DEFAULT_AUDIT_SEAL_S = 86_400.0  # the auditor seals the audit chain daily
MAX_STREAM_REPLICAS = 5  # nats-server's limit


@dataclass(frozen=True, slots=True)
class WatchdogSettings:
    """The watchdog's knobs (services/watchdog/service.py). Times are seconds of the stream's
    clock."""

    interval_s: float = DEFAULT_HEARTBEAT_INTERVAL_S  # for agents not (yet) registered
    warn_misses: float = 2.0  # warning when silent for interval x warn_misses
    critical_misses: float = 5.0  # critical (offline, leases released) at interval x this
    grace_s: float = DEFAULT_HEARTBEAT_INTERVAL_S  # judge no one this long after (re)connecting
    stall_s: float = 900.0  # a held task with no report for this long is stalled
    default_sla_s: float = 3600.0  # time allowed in progress for tasks without sla_s; 0: none
    review_sla_s: float = 86_400.0  # time allowed in review for tasks without sla_s; 0: none
    error_window_s: float = 300.0  # tool-error spike: the window ...
    error_threshold: float = 0.5  # ... the share of failed calls in it ...
    error_min_calls: int = 10  # ... and the calls it needs before it can judge
    wake_runs: int = 5  # wake loop: this many runs finished without task progress ...
    wake_window_s: float = 600.0  # ... within this window
    failed_runs: int = 5  # this many runs failed in a row, however far apart: critical, paused
    # (i, n): judge agent a iff schemas/partitions.partition_of(a, n) == i (FNV-1a, the
    # server's heartbeat partition token: the projector's partition i/n owns the same agents)
    partition: tuple[int, int] = (0, 1)
    # KPI drift (core/drift.py): read the KPIs this often (0: never) ...
    drift_every_s: float = 60.0
    drift_min_runs: int = 10  # ... a success rate needs this many runs on both sides ...
    drift_min_reviews: int = 5  # ... rework and cost per task this many reviews / tasks done
    drift_success_drop: float = 0.1  # success rate down by this much (0.1: 10 points) ...
    drift_cost_rise: float = 0.5  # ... cost per task up by this share (0.5: +50%) ...
    drift_rework_rise: float = 0.1  # ... or rework rate up by this much: kpi_drift

    def __post_init__(self) -> None:
        if self.interval_s <= 0:
            raise FleetwardError("FLEETWARD_WATCHDOG_INTERVAL_S must be more than 0")
        if not 0 < self.warn_misses < self.critical_misses:
            raise FleetwardError(
                "FLEETWARD_WATCHDOG_WARN_MISSES must be more than 0 and less than "
                "FLEETWARD_WATCHDOG_CRITICAL_MISSES"
            )
        if not 0 < self.error_threshold <= 1:
            raise FleetwardError("FLEETWARD_WATCHDOG_ERROR_THRESHOLD must be in (0, 1]")
        if self.stall_s <= 0 or self.error_window_s <= 0 or self.wake_window_s <= 0:
            raise FleetwardError("the watchdog's stall time and windows must be more than 0")
        if self.error_min_calls < 1 or self.wake_runs < 1 or self.failed_runs < 1:
            raise FleetwardError("the watchdog's call and run counts must be 1 or more")
        if self.drift_every_s < 0 or self.drift_min_runs < 1 or self.drift_min_reviews < 1:
            raise FleetwardError(
                "FLEETWARD_WATCHDOG_DRIFT_EVERY_S must be 0 or more, and the drift's minimum "
                "runs and reviews 1 or more"
            )
        if min(self.drift_success_drop, self.drift_cost_rise, self.drift_rework_rise) <= 0:
            raise FleetwardError("the watchdog's KPI drift thresholds must be more than 0")

    @classmethod
    def from_env(cls, env: dict[str, str]) -> WatchdogSettings:
        def num(name: str, default: float) -> float:
            return _number(env, f"FLEETWARD_WATCHDOG_{name}", default)

        interval = num("INTERVAL_S", DEFAULT_HEARTBEAT_INTERVAL_S)
        return cls(
            interval_s=interval,
            warn_misses=num("WARN_MISSES", 2.0),
            critical_misses=num("CRITICAL_MISSES", 5.0),
            grace_s=num("GRACE_S", interval),
            stall_s=num("STALL_S", 900.0),
            default_sla_s=num("DEFAULT_SLA_S", 3600.0),
            review_sla_s=num("REVIEW_SLA_S", 86_400.0),
            error_window_s=num("ERROR_WINDOW_S", 300.0),
            error_threshold=num("ERROR_THRESHOLD", 0.5),
            error_min_calls=int(num("ERROR_MIN_CALLS", 10)),
            wake_runs=int(num("WAKE_RUNS", 5)),
            wake_window_s=num("WAKE_WINDOW_S", 600.0),
            failed_runs=int(num("FAILED_RUNS", 5)),
            drift_every_s=num("DRIFT_EVERY_S", 60.0),
            drift_min_runs=int(num("DRIFT_MIN_RUNS", 10)),
            drift_min_reviews=int(num("DRIFT_MIN_REVIEWS", 5)),
            drift_success_drop=num("DRIFT_SUCCESS_DROP", 0.1),
            drift_cost_rise=num("DRIFT_COST_RISE", 0.5),
            drift_rework_rise=num("DRIFT_REWORK_RISE", 0.1),
            partition=parse_partition(env.get("FLEETWARD_WATCHDOG_PARTITION", "")),
        )


def parse_partition(raw: str, setting: str = "FLEETWARD_WATCHDOG_PARTITION") -> tuple[int, int]:
    """``"i/n"`` (this process's share of the agents) as ``(i, n)``; empty means ``(0, 1)``.
    ``FleetwardError`` naming ``setting`` when it is not (schemas/partitions.py)."""
    try:
        return partitions.parse_partition(raw, setting)
    except ValueError as exc:
        raise FleetwardError(str(exc)) from None


def default_home() -> Path:
    """Where Fleetward keeps its data without ``FLEETWARD_HOME``: the user's state folder
    (platformdirs: ``$XDG_STATE_HOME/fleetward``, else ``~/.local/state/fleetward`` on Linux),
    the same from every working directory, so ``fleetward status`` finds the Fleetward that
    ``fleetward dev`` runs. Not created here."""
    return Path(user_state_dir("fleetward", appauthor=False))


@dataclass(frozen=True, slots=True)
class Settings:
    nats_url: str | None  # None: start an embedded nats-server
    database_url: str | None  # None: start an embedded Postgres
    home: Path  # FLEETWARD_HOME: the embedded servers' data, runtime.json (default_home())
    creds: Path | None  # FLEETWARD_CREDS: the credentials this process acts with
    auth_dir: Path  # FLEETWARD_AUTH_DIR: the signing keys (services/auth/store.py)
    retention_days: float  # FW_EVENTS retention; 0 keeps events forever
    metrics_host: str
    metrics_port: int  # 0: pick a free port
    batch_size: int
    watchdog: WatchdogSettings = field(default_factory=WatchdogSettings)
    # /healthz fails when a projection holds events it has not committed for this long
    stall_s: float = DEFAULT_STALL_S
    audit_seal_s: float = DEFAULT_AUDIT_SEAL_S  # the auditor seals the chain once per this
    # FLEETWARD_STREAM_REPLICAS: the streams are created with this many replicas (3 on a
    # three-node cluster) and existing ones must have it; None (unset): created with 1, and an
    # existing stream's count is left as it is
    stream_replicas: int | None = None
    api_host: str = "127.0.0.1"  # FLEETWARD_API_HOST: the HTTP API and dashboard
    api_port: int = 0  # FLEETWARD_API_PORT; 0: pick a free port
    # FLEETWARD_API_CREDS: svc:api's credentials, for a process given FLEETWARD_CREDS of another
    # service that serves the task API too (the projector: deploy/systemd)
    api_creds: Path | None = None
    # FLEETWARD_KPI_GAUGES_S: the fleetward_kpi_* gauges are read this often (their windows
    # are 7 and 30 days); the other fleet gauges every 10 s
    kpi_gauges_s: float = 300.0
    # FLEETWARD_API_TLS_CERT / FLEETWARD_API_TLS_KEY: PEM files; both set, the API speaks HTTPS
    api_tls: tuple[Path, Path] | None = None
    # FLEETWARD_HEARTBEAT_PARTITIONS: FW_HEARTBEATS stores heartbeats in this many partitions
    # (schemas/partitions.py); None (unset): created with 1, an existing stream's left as it is
    heartbeat_partitions: int | None = None

    def api_base(self, port: int) -> str:
        """The API's and dashboard's base URL on ``port``: ``https://`` with TLS set."""
        return f"{'https' if self.api_tls else 'http'}://{self.api_host}:{port}"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        home = Path(env.get("FLEETWARD_HOME") or default_home()).expanduser().resolve()
        return cls(
            nats_url=env.get("FLEETWARD_NATS_URL") or None,
            database_url=env.get("FLEETWARD_DATABASE_URL") or None,
            home=home,
            creds=Path(env["FLEETWARD_CREDS"]).expanduser().resolve()
            if env.get("FLEETWARD_CREDS")
            else None,
            auth_dir=Path(env.get("FLEETWARD_AUTH_DIR") or home / "auth").expanduser().resolve(),
            retention_days=_number(env, "FLEETWARD_RETENTION_DAYS", DEFAULT_AUDIT_RETENTION_DAYS),
            metrics_host=env.get("FLEETWARD_METRICS_HOST", "127.0.0.1"),
            metrics_port=int(_number(env, "FLEETWARD_METRICS_PORT", 0)),
            batch_size=int(_number(env, "FLEETWARD_BATCH_SIZE", 1000)),
            watchdog=WatchdogSettings.from_env(env),
            stall_s=_number(env, "FLEETWARD_STALL_S", DEFAULT_STALL_S),
            audit_seal_s=_seal_period(env),
            stream_replicas=_replicas(env),
            api_host=env.get("FLEETWARD_API_HOST", "127.0.0.1"),
            api_port=int(_number(env, "FLEETWARD_API_PORT", 0)),
            api_creds=Path(env["FLEETWARD_API_CREDS"]).expanduser().resolve()
            if env.get("FLEETWARD_API_CREDS")
            else None,
            api_tls=_tls(env),
            kpi_gauges_s=_number(env, "FLEETWARD_KPI_GAUGES_S", 300.0),
            heartbeat_partitions=_heartbeat_partitions(env),
        )


def _heartbeat_partitions(env: dict[str, str]) -> int | None:
    raw = env.get("FLEETWARD_HEARTBEAT_PARTITIONS", "").strip()
    if not raw:
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= partitions.MAX_PARTITIONS:
        raise FleetwardError(
            f"FLEETWARD_HEARTBEAT_PARTITIONS={raw!r} is not a count from 1 to "
            f"{partitions.MAX_PARTITIONS} (1: heartbeats unpartitioned), or unset"
        )
    return int(raw)


def _tls(env: dict[str, str]) -> tuple[Path, Path] | None:
    """(certificate chain, private key) of the API's HTTPS, both PEM files; None for plain HTTP.
    ``FleetwardError`` when only one is set or a file is missing."""
    cert, key = env.get("FLEETWARD_API_TLS_CERT", ""), env.get("FLEETWARD_API_TLS_KEY", "")
    if not cert and not key:
        return None
    if not cert or not key:
        raise FleetwardError(
            "set both FLEETWARD_API_TLS_CERT (the certificate chain, PEM) and "
            "FLEETWARD_API_TLS_KEY (its private key, PEM) for HTTPS, or neither"
        )
    paths = (Path(cert).expanduser().resolve(), Path(key).expanduser().resolve())
    for path in paths:
        if not path.is_file():
            raise FleetwardError(f"{path} (FLEETWARD_API_TLS_*) is not a file")
    return paths


def _replicas(env: dict[str, str]) -> int | None:
    raw = env.get("FLEETWARD_STREAM_REPLICAS", "").strip()
    if not raw:
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_STREAM_REPLICAS:
        raise FleetwardError(
            f"FLEETWARD_STREAM_REPLICAS={raw!r} is not a replica count from 1 to "
            f"{MAX_STREAM_REPLICAS} (3 on a three-node cluster, 1 on one server), or unset"
        )
    return int(raw)


def _seal_period(env: dict[str, str]) -> float:
    value = _number(env, "FLEETWARD_AUDIT_SEAL_S", DEFAULT_AUDIT_SEAL_S)
    if not MIN_SEAL_PERIOD_S <= value <= MAX_SEAL_PERIOD_S:
        raise FleetwardError(
            f"FLEETWARD_AUDIT_SEAL_S={value:g} is out of range: {MIN_SEAL_PERIOD_S:g} to "
            f"{MAX_SEAL_PERIOD_S:g} seconds (86400: daily)"
        )
    return value


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
    if not math.isfinite(value):  # inf would never come, nan never compares
        raise FleetwardError(f"{name}={raw!r} is not a finite number; set a number or unset it")
    if value < 0:
        raise FleetwardError(f"{name}={raw!r} is negative; set it to 0 or more")
    return value
