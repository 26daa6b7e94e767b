"""Everything in Fleetward that does I/O: NATS, Postgres, HTTP, processes. One package per
subsystem; each opens with its invariants and keeps its pure rules apart from its I/O.

- ``jetstream/``: the JetStream pull protocol (one implementation), the durable consumer, the
  ordered follower, publishing, stream creation.
- ``projector/``: projections applied exactly once in effect (windows, row cache, commit,
  rebuild).
- ``watchdog/``: heartbeats and activity in, escalations and lease expiries out; ``core/`` is
  the pure judging, the rest reads, times and publishes.
- ``client/``: the agent SDK and the operator client (NATS only, no Postgres).
- ``api/``: request/reply answers served from the projections (``fw.api.*``).
- ``metrics/``: Prometheus metrics, the /metrics and /healthz server, the fleet gauges.
- ``cli/``: the ``fleetward`` command, one module per command group.
- ``runtime/``: connections to the servers, or embedded ones for a machine with nothing.
- ``db.py`` (Postgres statements), ``config.py`` (settings from the environment),
  ``errors.py`` (errors an operator can act on), ``serve.py`` (services in one process),
  ``simulate.py`` (a demo fleet), ``signals.py`` (test signals: background work announces its
  steps), ``clock.py`` (the clock timed loops read, or one a test moves by hand).
"""
