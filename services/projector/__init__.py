"""The projector: every projection applied exactly once in effect (DESIGN 3.5, 3.6).

Invariants:
- A projection's rows and its checkpoint change in one Postgres transaction, compare-and-set on
  the checkpoint; acknowledgements are sent only after the commit.
- An event that cannot be applied is dead-lettered in that same transaction, never retried
  forever; the stream keeps the original.
- Live equals rebuild: folds see only the event and its stream metadata.
- One writer per projection: a runner writes only while it holds the projection's lease (a
  Postgres session-level advisory lock), checked in every commit; other processes stand by.
- A window starts right after the checkpoint it commits on; else it fails, never skips.

Modules: ``runner`` (the consumer loop of one stream's projections), ``window`` (admitting and
folding batches between commits), ``cache`` (the row cache, loading the rows a batch touches),
``commit`` (a window's transaction), ``consumers`` (which durable consumer feeds which
projections), ``lease`` (the one writer and its standbys), ``rebuild`` (reset, catch up,
rebuild).
"""
