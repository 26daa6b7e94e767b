"""Turning raw bytes from the bus into a trusted event, or a reason why not. Pure.

Every consumer calls ``admit`` before it uses an event. A rejected event is never applied; the
caller records it in the dead-letter table with ``Rejected.reason`` and moves on.
"""

from __future__ import annotations

from typing import Final

import msgspec

from fleetward.schemas.events import AnyEvent, Event, TaskReviewed
from fleetward.schemas.subjects import parse, subject_of

MAX_EVENT_BYTES: Final = 256 * 1024  # room for a 32,000-character deliverable, escaped

# The reasons a dead letter can carry (also the values of the `reason` metric label).
REASONS: Final = (
    "oversized",  # the payload is larger than MAX_EVENT_BYTES
    "not_json",  # the payload does not parse as JSON
    "unknown_type",  # `type` is missing or names no event in the catalogue
    "invalid",  # a field is missing, mistyped or out of range
    "wrong_subject",  # the event belongs on another subject
    "actor_forbidden",  # the actor may not publish this event type (or not about this subject)
)

_decoder: Final = msgspec.json.Decoder(AnyEvent)


class Rejected(Exception):
    """An event that may not be applied. ``reason`` is one of ``REASONS``."""

    def __init__(self, reason: str, detail: str) -> None:
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


def decode(data: bytes) -> Event:
    """Decode one event, raising ``Rejected`` on bad bytes. No subject or actor checks."""
    if len(data) > MAX_EVENT_BYTES:
        raise Rejected("oversized", f"{len(data)} bytes > {MAX_EVENT_BYTES}")
    try:
        event: Event = _decoder.decode(data)
    except msgspec.ValidationError as exc:
        message = str(exc)
        # msgspec quotes the bad value too: judge by where the error is, not by what it says
        at_tag = message.endswith(" - at `$.type`")
        tag_missing = message == "Object missing required field `type`"
        reason = "unknown_type" if at_tag or tag_missing else "invalid"
        raise Rejected(reason, message) from None
    except msgspec.DecodeError as exc:
        raise Rejected("not_json", str(exc)) from None
    return event


def admit(subj: str, data: bytes) -> Event:
    """Decode an event received on ``subj`` and check that it belongs there and its actor may
    publish it. Raises ``Rejected`` otherwise."""
    event = decode(data)
    expected = subject_of(event)
    if expected != subj:
        where = "a non-Fleetward subject" if parse(subj) is None else subj
        raise Rejected(
            "wrong_subject",
            f"{type(event).__struct_config__.tag} belongs on {expected}, got {where}",
        )
    check_sender(event)
    return event
