"""JetStream I/O: the one place that speaks the pull protocol, publishes and creates streams.

Invariants:
- Every wire name (stream, subject, header, consumer name) comes from ``fleetward.schemas``.
- Every publish of an event is idempotent: ``Nats-Msg-Id`` is the event id.
- A pull request's status replies (100 heartbeat, 404/408 nothing more, 409 request or consumer
  ended, 503 no JetStream) are interpreted in one place (protocol.py), and pull requests are
  made and made again in one place (puller.py), for the durable consumer and the ordered
  follower alike.
- Every connection is a ``FleetwardNats`` (connection.py): whatever subject or headers nats-server
  delivers, the message reaches its reader (a subject that is not printable UTF-8 comes
  backslash-escaped, escape.py) and the connection keeps reading.
"""
