"""The guard: spend against budgets, pauses out (DESIGN 3.9, issue 14 part 3).

Invariants:
- ``core.py`` is pure: no I/O and no clock; every time is passed in. ``service.py`` reads and
  times, ``publish.py`` publishes.
- Windows are UTC days of the stream's time of record, never the producer's clock.
- Replicas following the same stream publish each event once: deterministic ids and
  compare-and-set on the budget's subjects.
"""
