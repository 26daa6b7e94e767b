"""Create the streams of schemas/streams.py, or verify existing ones. Never changes a stream's
settings silently: a conflict is an error that names the setting."""

from __future__ import annotations

from typing import Any

from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import NotFoundError

from fleetward.schemas.streams import StreamSpec
from fleetward.services.errors import StreamConflict


def to_config(spec: StreamSpec) -> StreamConfig:
    return StreamConfig(
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
    )


def missing_subjects(spec: StreamSpec, found: StreamConfig) -> list[str]:
    """The subjects ``spec`` has that the existing stream lacks (a newer contract's kinds,
    e.g. ``fw.person.>`` of contract v2): adding them changes nothing already stored."""
    have = set(found.subjects or [])
    return [s for s in spec.subjects if s not in have]


def conflicts(spec: StreamSpec, found: StreamConfig) -> list[str]:
    """The settings in which an existing stream differs from ``spec``, as readable phrases
    (subjects it lacks are not a conflict: ``ensure_streams`` adds them)."""
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


async def ensure_streams(js: JetStreamContext, specs: tuple[StreamSpec, ...]) -> list[str]:
    """Create missing streams; verify existing ones. Returns the names created."""
    created = []
    for spec in specs:
        try:
            info = await js.stream_info(spec.name)
        except NotFoundError:
            await js.add_stream(to_config(spec))
            created.append(spec.name)
            continue
        problems = conflicts(spec, info.config)
        if not problems and missing_subjects(spec, info.config):
            config = info.config
            config.subjects = [*(config.subjects or []), *missing_subjects(spec, config)]
            await js.update_stream(config)  # only adds subjects: nothing stored changes
            continue
        if problems:
            raise StreamConflict(
                f"stream {spec.name} exists with other settings: {'; '.join(problems)} "
                f"(change the stream with the nats CLI, or the setting that asks for it)"
            )
    return created
