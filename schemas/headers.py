"""NATS and JetStream protocol names Fleetward reads or writes: message headers, status codes
and API subjects. Pure. Every other module imports these instead of spelling them out.

Headers and API subjects are nats-server's (JetStream ADR-31 for direct gets, ADR-13/ADR-37
for pull requests and their status replies).
"""

from __future__ import annotations

from typing import Final

# ---- headers ----------------------------------------------------------------------------------
MSG_ID: Final = "Nats-Msg-Id"  # deduplication within the stream's duplicate window
EXPECTED_LAST_SUBJECT_SEQ: Final = "Nats-Expected-Last-Subject-Sequence"  # compare-and-set
# ... over these subjects instead of the message's own (a wildcard: a whole boundary's v2
# subjects, ``subjects.boundary_wildcard``; nats-server 2.11+)
EXPECTED_LAST_SUBJECT_SEQ_SUBJECT: Final = "Nats-Expected-Last-Subject-Sequence-Subject"
SUBJECT: Final = "Nats-Subject"  # a direct get's subject the message was stored on
SEQUENCE: Final = "Nats-Sequence"  # a direct get's stream sequence
TIME_STAMP: Final = "Nats-Time-Stamp"  # a direct get's time of record (RFC 3339)
STATUS: Final = "Status"  # the status of a reply without a message (pull, direct get)
DESCRIPTION: Final = "Description"  # the text beside a status

# ---- status codes of pull requests and direct gets ----------------------------------------------
IDLE_HEARTBEAT: Final = "100"  # the request is alive; nothing to read
NO_MESSAGES: Final = "404"  # nothing more right now (no_wait), or no such message (direct get)
END_OF_BATCH: Final = "204"  # a batch direct get's last reply: no message, this status
REQUEST_TIMEOUT: Final = "408"  # the request expired
CONFLICT: Final = "409"  # the request ended: consumer deleted, leadership change, limits
NO_RESPONDERS: Final = "503"  # JetStream did not answer
CONSUMER_DELETED: Final = "Consumer Deleted"  # a 409's description when the consumer is gone
CONSUMER_IS_PUSH_BASED: Final = "Consumer is push based"  # a 409's: it cannot be pulled from
BATCH_COMPLETED: Final = "Batch Completed"  # a 409's after the last message of a max_bytes request

# ---- JetStream API errors ---------------------------------------------------------------------
WRONG_LAST_SEQUENCE: Final = 10071  # err_code: Nats-Expected-Last-Subject-Sequence did not match
# ... the same on a replicated stream whose leader refuses while a message on those subjects is
# still in flight (JSStreamWrongLastSequenceConstantErr): a compare-and-set lost all the same
WRONG_LAST_SEQUENCE_IN_FLIGHT: Final = 10164
WRONG_LAST_SEQUENCES: Final = frozenset({WRONG_LAST_SEQUENCE, WRONG_LAST_SEQUENCE_IN_FLIGHT})
# A publish the server could not judge yet, to be retried with the same id: a message with that
# id is in flight (JSStreamDuplicateMessageConflict, 409); the new leader of a replicated stream
# cannot check expected sequences yet (JSStreamExpectedLastSeqPerSubjectNotReady, 503)
PUBLISH_NOT_YET: Final = frozenset({10158, 10163})
NO_MESSAGE_FOUND: Final = 10037  # err_code of a message get that found nothing

# ---- JetStream API subjects -------------------------------------------------------------------


def pull_subject(stream: str, consumer: str) -> str:
    """The subject a pull request for ``consumer`` is published to."""
    return f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"


def consumer_create_subject(stream: str, consumer: str, filter_subject: str) -> str:
    """The explicit-filter form of creating (or updating) a consumer (nats-server 2.10+): the
    server refuses a body whose filter differs from the subject's, so a permission on this
    subject pins both the consumer and what it reads."""
    return f"$JS.API.CONSUMER.CREATE.{stream}.{consumer}.{filter_subject}"


def direct_get_subject(stream: str) -> str:
    """The subject of a direct get (ADR-31) on ``stream`` (needs ``allow_direct``)."""
    return f"$JS.API.DIRECT.GET.{stream}"


def msg_get_subject(stream: str) -> str:
    """The subject of a message get on ``stream``, answered with the message wrapped in JSON
    (``{"type": "io.nats.jetstream.api.v1.stream_msg_get_response", "message": {...}}``)."""
    return f"$JS.API.STREAM.MSG.GET.{stream}"
