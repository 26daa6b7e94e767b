"""The runner's invariant (services/projector/window.py): a window starts right after the
checkpoint it commits on, so no event between them is skipped."""

from __future__ import annotations

import pytest

from fleetward.schemas import Rejected
from fleetward.services.jetstream.consumer import Delivery
from fleetward.services.projector.cache import RowCache
from fleetward.services.projector.window import Admitted, Gap, follows, open_window
from tests.helpers import now


def batch(*seqs: int) -> Admitted:
    return [
        (Delivery(s, now(), "fw.x", b"", "", 0, i), Rejected("bad", "unused"))
        for i, s in enumerate(seqs, 1)
    ]


def test_a_window_starting_after_its_checkpoint_passes() -> None:
    window = open_window(10, RowCache())
    follows(window, batch(11, 12, 13), after=10)


def test_a_filtered_consumer_may_jump_over_other_subjects() -> None:
    """The consumer delivers the first message past the checkpoint on its subjects: a higher
    stream sequence is no gap when nothing was delivered between."""
    window = open_window(10, RowCache())
    follows(window, batch(17, 40), after=10)


def test_redeliveries_at_or_before_the_checkpoint_are_no_gap() -> None:
    window = open_window(10, RowCache())
    follows(window, batch(3, 9, 10, 11), after=10)


def test_a_window_on_a_checkpoint_ahead_of_the_consumer_passes() -> None:
    """A projection whose checkpoint is ahead of its runner's lowest (the consumer starts there)
    skips what it applied, then follows on."""
    window = open_window(20, RowCache())
    follows(window, batch(6, 15, 20, 21), after=5)


def test_a_window_that_would_start_past_events_it_never_folded_fails() -> None:
    """The consumer delivered up to 14 before this batch, but the window commits on 10: events
    11..14 were never folded into it; committing would skip them."""
    window = open_window(10, RowCache())
    with pytest.raises(Gap, match="commits on 10"):
        follows(window, batch(15, 16), after=14)
