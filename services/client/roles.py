"""The roles of people, read from the stream (schemas/roles.py): every reader that judges a
person's events (the projector, the watchdog, the clients' task reads) keeps a ``RoleBook``
of the role events of FW_EVENTS, so they all judge alike."""

from __future__ import annotations

from nats.aio.client import Client as NatsClient

from fleetward.schemas import Rejected, admit
from fleetward.schemas.roles import RoleBook, judge
from fleetward.schemas.streams import EVENTS_STREAM
from fleetward.schemas.subjects import wildcard
from fleetward.services.client.direct import last_seq_on, read_subjects


async def read_roles(
    nc: NatsClient, book: RoleBook | None = None, *, direct: bool = False
) -> RoleBook:
    """``book`` (a new one when None) with every role event stored after its ``last_seq``.
    A role event admission refuses, or whose author may not make it, grants nothing. One
    indexed lookup when nothing changed (the last message on ``fw.person.>``), so a reader can
    bring its book up to date before every judgement. ``direct``: read by direct gets (services
    only, services/client/direct.py)."""
    book = RoleBook() if book is None else book
    newest = await last_seq_on(nc, EVENTS_STREAM, wildcard("person"), direct=direct)
    if newest <= book.last_seq:
        return book
    changes = read_subjects(
        nc, EVENTS_STREAM, wildcard("person"), after=book.last_seq, direct=direct
    )
    async for stored in changes:
        try:
            judge(admit(stored.subject, stored.data), stored.seq, book)
        except Rejected:
            book.last_seq = max(book.last_seq, stored.seq)
    return book
