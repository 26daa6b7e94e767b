"""Create the streams of schemas/streams.py, or verify existing ones. Never changes a stream's
settings silently: a conflict is an error that names the setting.

The replica count is the deployment's, not the contract's (``FLEETWARD_STREAM_REPLICAS``: 3 on a
three-node cluster): streams are created with it, and an existing stream must have it when it is
given; without it they are created with one replica and an existing one's count is its own.

FW_HEARTBEATS' partitions (``FLEETWARD_HEARTBEAT_PARTITIONS``, schemas/partitions.py) likewise:
unset, the stream is created with one and an existing one keeps its subject transform. Given, an
existing stream without a transform gets it (a migration: heartbeats stored before keep their
subject, new ones are stored partitioned); a stream partitioned otherwise is refused, naming
the fix, because moving the token under running partitions would starve them silently."""

from __future__ import annotations

import logging
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig, SubjectTransform
from nats.js.errors import APIError, NotFoundError

from fleetward.schemas.partitions import partitions_of
from fleetward.schemas.streams import HEARTBEATS_STREAM, StreamSpec
from fleetward.services.errors import FleetwardError, StreamConflict
from fleetward.services.jetstream.reads import stream_info

log = logging.getLogger("fleetward.jetstream")


def to_config(spec: StreamSpec, replicas: int = 1) -> StreamConfig:
    return StreamConfig(
        num_replicas=replicas,
        name=spec.name,
        description=spec.description,
        subjects=list(spec.subjects),
        max_age=spec.max_age_s,
        duplicate_window=spec.duplicate_window_s,
        max_msg_size=spec.max_msg_size,
        deny_delete=spec.deny_delete,
        deny_purge=spec.deny_purge,
        allow_rollup_hdrs=spec.allow_rollup,
        allow_direct=spec.allow_direct,
        storage=StorageType(spec.storage),
        subject_transform=None
        if spec.subject_transform is None
        else SubjectTransform(*spec.subject_transform),
    )


def transform_of(found: StreamConfig) -> tuple[str, str] | None:
    """An existing stream's subject transform as (source, destination), or None."""
    tr = found.subject_transform
    if tr is None or not (tr.src or tr.dest):
        return None
    return tr.src, tr.dest


def _transform_problem(spec: StreamSpec, found: StreamConfig) -> str | None:
    """Why an existing stream's subject transform cannot stand for ``spec``'s, or None when it
    is the same, or absent where ``spec`` has one (``ensure_streams`` adds it then)."""
    have = transform_of(found)
    if have == spec.subject_transform or have is None:
        return None
    counted = partitions_of(have)
    shown = f"{counted} partitions" if counted else f"{have!r}, not Fleetward's"
    return (
        f"subject_transform makes {shown}, FLEETWARD_HEARTBEAT_PARTITIONS asks for "
        f"{partitions_of(spec.subject_transform)}: stop the projector's partitions, remove it "
        f"(nats stream edit {spec.name} --no-transform) and start with the new count"
    )


def missing_subjects(spec: StreamSpec, found: StreamConfig) -> list[str]:
    """The subjects ``spec`` has that the existing stream lacks (a newer contract's kinds,
    e.g. ``fw.person.>`` of contract v2): adding them changes nothing already stored."""
    have = set(found.subjects or [])
    return [s for s in spec.subjects if s not in have]


def conflicts(
    spec: StreamSpec,
    found: StreamConfig,
    replicas: int | None = None,
    *,
    transforms: bool = True,
) -> list[str]:
    """The settings in which an existing stream differs from ``spec`` (and from ``replicas``
    when given; its subject transform unless ``transforms`` is False), as readable phrases
    (subjects it lacks, or a transform where it has none, are not a conflict:
    ``ensure_streams`` adds them)."""
    wanted: dict[str, tuple[Any, Any]] = {
        "subjects": (sorted(spec.subjects), sorted({*(found.subjects or []), *spec.subjects})),
        "max_age": (spec.max_age_s, found.max_age or 0.0),
        "max_msg_size": (spec.max_msg_size, found.max_msg_size),
        "deny_delete": (spec.deny_delete, found.deny_delete),
        "deny_purge": (spec.deny_purge, found.deny_purge),
        "allow_rollup_hdrs": (spec.allow_rollup, found.allow_rollup_hdrs),
        "allow_direct": (spec.allow_direct, bool(found.allow_direct)),
        "storage": (spec.storage, getattr(found.storage, "value", found.storage)),
    }
    out = [
        f"{k} is {have!r}, Fleetward needs {want!r}"
        for k, (want, have) in wanted.items()
        if not _same(want, have)
    ]
    if replicas is not None and (found.num_replicas or 1) != replicas:
        out.append(
            f"num_replicas is {found.num_replicas or 1}, FLEETWARD_STREAM_REPLICAS asks for "
            f"{replicas}"
        )
    if transforms and (problem := _transform_problem(spec, found)) is not None:
        out.append(problem)
    if (found.duplicate_window or 0) < spec.duplicate_window_s:
        out.append(
            f"duplicate_window is {found.duplicate_window!r}s, Fleetward needs at least "
            f"{spec.duplicate_window_s!r}s"
        )
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return abs(float(a) - float(b)) < 1e-3
    return bool(a == b)


async def ensure_streams(
    js: JetStreamContext,
    specs: tuple[StreamSpec, ...],
    replicas: int | None = None,
    *,
    transforms: bool = True,
) -> list[str]:
    """Create missing streams (with ``replicas``, 1 when None); verify existing ones (their
    replica count too when ``replicas`` is given, their subject transform unless
    ``transforms`` is False), adding the subjects and the transform they lack. Returns the
    names created. Raises ``StreamConflict`` naming the settings that differ,
    ``FleetwardError`` when the server cannot hold that many replicas."""
    created = []
    for spec in specs:
        try:
            info = await stream_info(js, spec.name)  # rides out a leader election (reads.py)
        except NotFoundError:
            await _create(js, spec, replicas or 1)
            created.append(spec.name)
            continue
        problems = conflicts(spec, info.config, replicas, transforms=transforms)
        adds = transforms and transform_of(info.config) is None and spec.subject_transform
        if not problems and (missing_subjects(spec, info.config) or adds):
            config = info.config
            config.subjects = [*(config.subjects or []), *missing_subjects(spec, config)]
            if adds:  # messages stored before keep their subjects; new ones are partitioned
                config.subject_transform = to_config(spec).subject_transform
                log.warning("stream %s: subject transform added (%s)", spec.name, adds)
            await js.update_stream(config)
            continue
        if problems:
            raise StreamConflict(
                f"stream {spec.name} exists with other settings: {'; '.join(problems)} "
                f"(change the stream with the nats CLI, or the setting that asks for it)"
            )
    return created


async def _create(js: JetStreamContext, spec: StreamSpec, replicas: int) -> None:
    try:
        await js.add_stream(to_config(spec, replicas))
    except APIError as exc:
        if replicas == 1 or exc.code not in (400, 500, 503):
            raise
        raise FleetwardError(
            f"cannot create stream {spec.name} with {replicas} replicas ({exc.description}): "
            "a server that is not in a JetStream cluster of that many nodes holds 1; set "
            "FLEETWARD_STREAM_REPLICAS to the cluster's size (1 on one server)"
        ) from None


async def heartbeat_partitions(js: JetStreamContext) -> int:
    """How many partitions FW_HEARTBEATS stores heartbeats in (its subject transform; 1 with
    none). Raises ``StreamConflict`` for a transform Fleetward did not make, what
    ``js.stream_info`` raises when the stream is missing."""
    info = await js.stream_info(HEARTBEATS_STREAM)
    counted = partitions_of(transform_of(info.config))
    if counted is None:
        raise StreamConflict(
            f"stream {HEARTBEATS_STREAM} has a subject transform Fleetward did not make: "
            f"{transform_of(info.config)!r}"
        )
    return counted
