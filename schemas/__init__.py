"""The Fleetward contract: event types, subjects, streams, admission. Pure: no I/O."""

from fleetward.schemas.admission import MAX_EVENT_BYTES, REASONS, Rejected, admit, decode
from fleetward.schemas.events import BY_TYPE, EVENT_TYPES, AnyEvent, Event, type_name
from fleetward.schemas.ids import deterministic_id, new_id
from fleetward.schemas.subjects import subject, subject_of

__all__ = [
    "BY_TYPE",
    "EVENT_TYPES",
    "MAX_EVENT_BYTES",
    "REASONS",
    "AnyEvent",
    "Event",
    "Rejected",
    "admit",
    "decode",
    "deterministic_id",
    "new_id",
    "subject",
    "subject_of",
    "type_name",
]
