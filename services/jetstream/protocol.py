"""What a reply to a JetStream pull request says. Pure: no I/O, no clock.

A pull request (``{"batch": n, "expires": ns}`` published to ``$JS.API.CONSUMER.MSG.NEXT``,
ADR-13) is answered on its inbox by stream messages and by status messages. A stream message
always carries its ack subject as reply subject, even under AckPolicy NONE; a status never
does: it is a header-only message whose ``Status`` and ``Description`` headers nats-py reads
from the inline status line (``NATS/1.0 409 Consumer Deleted``).

The statuses nats-server v2.15 sends to a pull request (server/consumer.go; ADR-37, "Status
handling") and what each means to a reader here:

- ``100 Idle Heartbeat``: the request is alive (sent only when the request asks for
  heartbeats): nothing to do.
- ``404 No Messages``, ``408 Request Timeout`` (and the other 408s: ``Interest Expired``, ``No
  Interest``, ``Bad Request``...): the request is over and nothing more is there right now.
- ``409 Consumer Deleted``: the consumer is gone; so is one replaced by a push consumer
  (``409 Consumer is push based``, terminal in ADR-37).
- ``409 Batch Completed``: sent after the last message of a request that set ``max_bytes``
  once its batch is complete: the request is over (the Puller knew already when its messages
  used up the batch).
- any other 409 (``Exceeded MaxWaiting``, ``Exceeded MaxRequestBatch of %d``, ``Leadership
  Change``, ``Message Size Exceeds MaxBytes``, ``Server Shutdown``): the request is over;
  asking again is right.
- ``503`` (no responders): nobody serves the consumer's pull subject: JetStream is away, or
  the consumer does not exist (a pull request the server had not seen when the consumer was
  deleted ends this way).

A status this module does not know ends the request too, as the other 409s do.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum

from nats.aio.msg import Msg

from fleetward.schemas.headers import (
    BATCH_COMPLETED,
    CONFLICT,
    CONSUMER_DELETED,
    CONSUMER_IS_PUSH_BASED,
    DESCRIPTION,
    IDLE_HEARTBEAT,
    NO_MESSAGES,
    NO_RESPONDERS,
    REQUEST_TIMEOUT,
    STATUS,
)

V1_TOKENS = 9  # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ns>.<pending>


class Status(Enum):
    """What a status reply to a pull request means to the reader that made it."""

    HEARTBEAT = "heartbeat"  # 100: the request is alive; nothing to read
    DONE = "done"  # 404, 408: the request is over; nothing more right now
    ENDED = "ended"  # other 409s, unknown statuses: the request is over; ask again
    COMPLETED = "completed"  # 409 Batch Completed: the request (with max_bytes) is over
    CONSUMER_GONE = "consumer gone"  # 409 Consumer Deleted / is push based: read no more
    UNAVAILABLE = "unavailable"  # 503: JetStream away, or no such consumer


def parse_ack_reply(reply: str) -> tuple[int, int, int, int]:
    """(stream sequence, consumer sequence, stream time in ns since the epoch, messages pending
    after this one) read from a message's ack subject (ADR-15).

    v1 has 9 tokens: ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ns>.<pending>``;
    v2 (``js_ack_fc_v2``) inserts ``<domain>.<account hash>`` after ``ACK`` and may append a
    random token (12 tokens, or 11). Raises ``ValueError`` or ``IndexError`` when ``reply`` is
    not an ack subject."""
    t = reply.split(".")
    off = 2 if len(t) == V1_TOKENS else 4
    return int(t[off + 3]), int(t[off + 4]), int(t[off + 5]), int(t[off + 6])


def status_of(headers: Mapping[str, str] | None) -> Status:
    """The meaning of a status reply, from its ``Status`` and ``Description`` headers (nats-py
    puts the inline status line's code and text there)."""
    if not headers:
        return Status.ENDED
    code = headers.get(STATUS, "")
    if code == IDLE_HEARTBEAT:
        return Status.HEARTBEAT
    if code in (NO_MESSAGES, REQUEST_TIMEOUT):
        return Status.DONE
    if code == NO_RESPONDERS:
        return Status.UNAVAILABLE
    if code == CONFLICT:
        description = headers.get(DESCRIPTION, "")
        if CONSUMER_DELETED in description or CONSUMER_IS_PUSH_BASED in description:
            return Status.CONSUMER_GONE
        if description == BATCH_COMPLETED:
            return Status.COMPLETED
    return Status.ENDED


def classify(msg: Msg) -> Status | None:
    """None for a stream message (it has an ack subject), else what the status means."""
    if msg.reply:
        return None
    return status_of(msg.headers)
