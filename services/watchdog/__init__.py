"""The watchdog: liveness, leases and detectors over the streams, escalations out (DESIGN 3.4,
3.8).

Invariants:
- ``core/`` is pure: no I/O and no clock; every time is passed in. ``service.py`` reads and
  times, ``escalate.py`` publishes.
- Deadlines come from the stream's clock (time of record), never the producer's.
- Replicas judging the same stream raise one escalation per incident: deterministic ids and
  compare-and-set on the escalation's subject.
"""
