"""Turning raw bytes from the bus into a trusted event, or a reason why not. Pure.

Every consumer calls ``admit`` before it uses an event. A rejected event is never applied; the
caller records it in the dead-letter table with ``Rejected.reason`` and moves on.

Subjects (schemas/subjects.py): an event with ``v >= 2`` is admitted only on its v2 subject,
whose actor token must be the payload's ``actor`` (NATS permissions make the subject proof of
who published; the payload alone proves nothing); one with ``v == 1`` only on its v1 subject,
judged as contract v1 judged it, so history reads as it always did.
"""

from __future__ import annotations

import contextlib
import re
from array import array
from collections.abc import Iterable
from itertools import accumulate
from typing import Final

import msgspec

from fleetward.schemas.bounds import IDENT_PATTERN, MAX_DEPTH, storable
from fleetward.schemas.events import (
    AnyEvent,
    ApprovalDenied,
    ApprovalGranted,
    Event,
    TaskReviewed,
)
from fleetward.schemas.partitions import published_subject
from fleetward.schemas.subjects import (
    ACTORLESS,
    FIRST_V2,
    Parsed,
    boundary,
    boundary_of,
    parse,
    subject_of,
)

MAX_EVENT_BYTES: Final = 256 * 1024  # room for a 32,000-character deliverable, escaped

# The reasons a dead letter can carry (also the values of the `reason` metric label).
REASONS: Final = (
    "oversized",  # the payload is larger than MAX_EVENT_BYTES
    "too_deep",  # arrays and objects nest deeper than bounds.MAX_DEPTH (known fields or not)
    "not_json",  # the payload does not parse as JSON
    "unknown_type",  # `type` is missing or names no event in the catalogue
    # a NATS server's answer (a JetStream publish ack or API response) that its requester aimed
    # at this subject as the reply subject: nobody published it here (docs/identity.md)
    "server_answer",
    "invalid",  # a field is missing, mistyped or out of range
    "wrong_subject",  # the event belongs on another subject
    "actor_forbidden",  # the actor may not publish this event type (or not about this subject)
    "actor_mismatch",  # a v2 event on its boundary's subject of another actor than its `actor`
    "role_missing",  # a person without the role the event needs at its position (roles.py)
    # an agent's own lifecycle event that would overrule the people and services operating it:
    # lift a pause it did not make, leave retirement (projections/lifecycle.py, judged in order)
    "lifecycle_forbidden",
    # an approval request or decision that does not fit the request's state: an id used
    # twice, a decision on an unknown or decided request, or naming another agent
    # (projections/approvals.py, judged in stream order)
    "approval_forbidden",
)

_decoder: Final = msgspec.json.Decoder(AnyEvent)


class _Answer(msgspec.Struct):
    """What tells a NATS server's answer from an event: a JetStream publish ack names its
    ``stream`` and ``seq``; every JetStream API response has a ``type`` of ``io.nats.``."""

    type: str = ""
    stream: str = ""


_answer: Final = msgspec.json.Decoder(_Answer)
SERVER_TYPES: Final = "io.nats."


def _server_answer(data: bytes) -> bool:
    """Whether ``data`` (which decoded as no event) is a NATS server's answer."""
    try:
        answer = _answer.decode(data)
    except (msgspec.DecodeError, RecursionError):
        return False
    return answer.type.startswith(SERVER_TYPES) or (not answer.type and bool(answer.stream))


class _Version(msgspec.Struct):
    v: int | msgspec.UnsetType = msgspec.UNSET


_version: Final = msgspec.json.Decoder(_Version)  # whether a payload says `v` at all

_any_json: Final = msgspec.json.Decoder()  # untyped: for measuring nesting
_NUL_ESCAPE: Final = b"\\u0000"  # the only way JSON text can hold U+0000
_BACKSLASH: Final = ord("\\")  # an int: `in` is then a memchr, with no needle to set up
# What the checks around decoding look for, kept in one pass: opening brackets and backslashes.
_NOT_WATCHED: Final = bytes(b for b in range(256) if b not in b"[{\\")

# For bytes that do not parse: a JSON string, or an unterminated one up to the end (one pass, no
# backtracking); brackets as steps (opening +1, closing -1 as a signed byte), the rest deleted.
_JSON_STRING: Final = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
_STEPS: Final = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKETS: Final = bytes(b for b in range(256) if b not in b"[]{}")


class Rejected(Exception):
    """An event that may not be applied. ``reason`` is one of ``REASONS``; ``detail`` is text
    Postgres can store (NUL and lone surrogates that it quotes are escaped)."""

    def __init__(self, reason: str, detail: str) -> None:
        detail = storable(detail)
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def actor_kind(actor: str) -> str:
    """``user``, ``svc`` or ``agent``."""
    if actor.startswith("user:"):
        return "user"
    if actor.startswith("svc:"):
        return "svc"
    return "agent"


def check_sender(event: Event) -> None:
    """Raise ``Rejected`` unless the event's actor may publish it (DESIGN 3.7)."""
    if isinstance(event, ApprovalGranted | ApprovalDenied) and event.actor == event.agent:
        # nobody decides their own request (DESIGN 3.10), whatever roles it holds
        raise Rejected("actor_forbidden", f"{event.actor!r} may not decide its own request")
    kind = actor_kind(event.actor)
    senders = event.SENDERS
    is_self = kind == "agent" and event.actor == getattr(event, "agent", None)
    if kind not in senders and not ("self" in senders and is_self):
        raise Rejected(
            "actor_forbidden",
            f"{event.actor!r} may not publish {type(event).__struct_config__.tag} "
            f"about {getattr(event, event.SUBJECT_KEY)!r}",
        )
    if isinstance(event, TaskReviewed) and event.actor == event.agent:
        raise Rejected("actor_forbidden", f"{event.actor!r} may not review its own deliverable")


def nesting(value: object) -> int:
    """How deeply lists and dicts nest in a decoded JSON value (1 for a flat object), counting
    no further than ``MAX_DEPTH + 1``. Iterative: any depth is safe."""
    depth, level = 0, [value]
    while depth <= MAX_DEPTH:  # level: the values ``depth`` containers deep
        containers = [v for v in level if isinstance(v, dict | list)]
        if not containers:
            break
        depth += 1
        level = [c for v in containers for c in (v.values() if isinstance(v, dict) else v)]
    return depth


def bracket_depth(data: bytes) -> int:
    """The deepest running count of brackets outside strings in ``data``, JSON or not: at least
    as deep as any JSON parser gets before it fails. Linear in ``len(data)``."""
    brackets = _JSON_STRING.sub(b"", data).translate(_STEPS, _NOT_BRACKETS)
    return max(accumulate(array("b", brackets)), default=0)


def watched(data: bytes) -> bytes:
    """The opening brackets and backslashes of ``data``, in order (one pass, the only one
    ordinary events pay for: fewer than ``MAX_DEPTH`` of them cannot nest too deep, and without
    a backslash no text holds NUL)."""
    return data.translate(None, _NOT_WATCHED)


def too_deep(data: bytes, seen: bytes | None = None) -> bool:
    """``data`` nests arrays and objects deeper than ``MAX_DEPTH``: a pure function of the bytes.
    ``seen`` is ``watched(data)`` when the caller has it.

    Fewer opening brackets than the limit, in text or not, cannot nest deeper. Otherwise the
    JSON is decoded without a type and measured; bytes that do not parse (or that exhaust the
    stack) are measured by their brackets outside strings."""
    seen = watched(data) if seen is None else seen
    if len(seen) - seen.count(b"\\") <= MAX_DEPTH:
        return False
    try:
        return nesting(_any_json.decode(data)) > MAX_DEPTH
    except (RecursionError, msgspec.DecodeError):
        return bracket_depth(data) > MAX_DEPTH


def nul_at(value: object, where: str = "$") -> str | None:
    """Where the first text holding NUL (U+0000) is in a decoded event, e.g. ``$.name``."""
    if isinstance(value, str):
        return where if "\x00" in value else None
    if isinstance(value, msgspec.Struct):
        items: Iterable[tuple[str, object]] = (
            (f"{where}.{f}", getattr(value, f)) for f in value.__struct_fields__
        )
    elif isinstance(value, tuple | list):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(value))
    elif isinstance(value, dict):
        items = ((f"{where}[...]", v) for kv in value.items() for v in kv)
    else:
        return None
    return next((found for w, v in items if (found := nul_at(v, w))), None)


def decode(data: bytes) -> Event:
    """Decode one event, raising ``Rejected`` on bad bytes. No subject or actor checks."""
    if len(data) > MAX_EVENT_BYTES:
        raise Rejected("oversized", f"{len(data)} bytes > {MAX_EVENT_BYTES}")
    # decided before decoding: msgspec recurses into unknown fields too, and how deep it may go
    # depends on the caller's stack, so a limit of its own keeps the verdict deterministic
    seen = watched(data)
    if len(seen) > MAX_DEPTH and too_deep(data, seen):
        raise Rejected("too_deep", f"arrays and objects nest deeper than {MAX_DEPTH}")
    try:
        event: Event = _decoder.decode(data)
    except msgspec.ValidationError as exc:
        message = str(exc)
        # msgspec quotes the bad value too: judge by where the error is, not by what it says
        at_tag = message.endswith(" - at `$.type`")
        tag_missing = message == "Object missing required field `type`"
        reason = "unknown_type" if at_tag or tag_missing else "invalid"
        if reason == "unknown_type" and _server_answer(data):
            raise Rejected("server_answer", "a NATS server's answer aimed here") from None
        raise Rejected(reason, message) from None
    except msgspec.DecodeError as exc:
        raise Rejected("not_json", str(exc)) from None
    except RecursionError:  # not expected after too_deep; never let it escape as a crash
        raise Rejected("too_deep", "nesting exhausted the decoder's stack") from None
    if _BACKSLASH in seen and _NUL_ESCAPE in data and (where := nul_at(event)):
        raise Rejected("invalid", f"Expected text without NUL (U+0000) - at `{where}`")
    return event


def admit(subj: str, data: bytes) -> Event:
    """Decode an event received on ``subj`` and check that it belongs there and its actor may
    publish it (a partitioned heartbeat's stored ``fw.hb.<p>.<agent>`` is judged as the
    ``fw.hb.<agent>`` it was published on: schemas/partitions.py). Raises ``Rejected`` otherwise."""
    event = decode(data)
    subj = published_subject(subj)
    where = parse(subj)
    if event.v >= FIRST_V2 and _v1_subject(where) and _v_absent(data):
        event = msgspec.structs.replace(event, v=1)  # written against v1, whose default was 1
    try:
        expected = subject_of(event)
    except ValueError as exc:  # a v2 actor that cannot be a subject token
        raise Rejected("invalid", f"{exc} - at `$.actor`") from None
    if expected != subj:
        tag = type(event).__struct_config__.tag
        if where is not None and where.actor is not None and _on_own_boundary(event, where):
            raise Rejected(
                "actor_mismatch",
                f"{tag} by {event.actor!r} on {subj}, whose actor is {where.actor!r}",
            )
        shown = "a non-Fleetward subject" if where is None else subj
        raise Rejected("wrong_subject", f"{tag} belongs on {expected}, got {shown}")
    check_sender(event)
    return event


def _v1_subject(where: Parsed | None) -> bool:
    """``where`` is a v1 subject of a kind whose v2 subjects carry the actor."""
    return where is not None and where.actor is None and where.kind not in ACTORLESS


def _v_absent(data: bytes) -> bool:
    """The payload says no ``v`` (it decodes: admission decoded it already)."""
    return _version.decode(data).v is msgspec.UNSET


def _on_own_boundary(event: Event, where: Parsed) -> bool:
    """The v2 subject ``where`` is of the event's own boundary (only its actor differs)."""
    return event.v >= FIRST_V2 and boundary_of(event) == boundary(where.kind, where.key)


_IDENT = re.compile(IDENT_PATTERN)
_SENDER_KINDS: Final = ("agent", "hb")  # v1 subject kinds whose key is the publishing agent


def sender_of(subject: str, data: bytes) -> str | None:
    """The agent a refused message came from, as far as can be told without trusting it. On a
    v2 subject, its actor token (the subject is proof: NATS permissions let an actor publish
    only on subjects naming it), when that is an agent id. Otherwise (v1 history, bytes on a
    subject of no form): the ``actor`` of a payload that is a JSON object, when that actor is
    an agent id (so an agent that publishes about another is told, not the other); else the
    agent its subject names (``fw.agent.<a>``, ``fw.hb.<a>``: bytes that are not JSON). None
    when no agent can be named (a v1 command names its recipient, not its sender)."""
    subject = published_subject(subject)
    where = parse(subject)
    if where is not None and where.actor is not None:
        return _agent_or_none(where.actor)
    parts = subject.split(".")
    if len(parts) >= 2 and parts[1] == "cmd":
        return None
    payload = None
    if not too_deep(data):
        with contextlib.suppress(msgspec.DecodeError, RecursionError):
            payload = msgspec.json.decode(data)
    actor = payload.get("actor") if isinstance(payload, dict) else None
    if isinstance(actor, str):
        return _agent_or_none(actor)
    if len(parts) == 3 and parts[1] in _SENDER_KINDS and _IDENT.match(parts[2]):
        return parts[2]
    return None


def _agent_or_none(actor: str) -> str | None:
    return actor if actor_kind(actor) == "agent" and _IDENT.match(actor) else None
