"""Fleetward's NATS connection: nats-py's ``Client``, made to deliver every message it receives.

nats-server stores and delivers a message on any subject without a space or tab in it
(services/jetstream/escape.py). nats-py 2.16.0 (``nats/aio/client.py``,
``nats/protocol/parser.py``) cannot take some of them, and the failure is not the message's
alone: it ends or resets the whole connection, and every reader on it meets the message again.

1. ``Client._build_message`` decodes the subject and reply with ``bytes.decode()``: on bytes
   that are not UTF-8 (``fw.agent.\\xff\\xfe``) the ``UnicodeDecodeError`` leaves ``_read_loop``,
   which logs it and stops reading. The connection stays up and silent until the pings go
   unanswered, then reconnects, and the consumer delivers the same message again.
2. ``Parser.parse`` matches ``MSG``/``HMSG`` control lines with ``\\s``, which in a bytes pattern
   also matches vertical tab and form feed; nats-server separates fields only by space and tab
   (https://docs.nats.io/nats-protocol/nats-protocol, "Field Delimiters"). A subject holding
   either is split in two, ``ProtocolError`` follows, and the client reconnects, for ever.
3. ``Client._process_headers`` decodes an inline status line (``NATS/1.0 <code> <text>``) with
   ``bytes.decode()``, so a core NATS message whose status line is not UTF-8 ends the read loop
   as in 1. (JetStream stores headers without a status line, so only core subjects, such as a
   service's request subject, are exposed.)

``FleetwardNats`` overrides exactly those three: subjects are decoded by
``escape.subject_text`` (unchanged when printable UTF-8, escaped otherwise), the control lines
are split on space and tab only, and headers that cannot be read make a message without
headers. Each such message is logged (at most one line a second, with a running count): the
reader then judges it like any other, so the projector dead-letters it (``wrong_subject``: no
event belongs on such a subject) and the followers hand it over in order.

These are private methods of nats-py, overridden knowingly: tests/unit/test_connection.py fails
loudly if a new nats-py renames them or changes their signatures or the parser's globals.

Every connection Fleetward makes is one of these: ``connect()`` stands in for ``nats.connect``
(which takes no client class).
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
import types
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import anyio
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import SlowConsumerError
from nats.protocol import parser as nats_parser

from fleetward.schemas.grants import inbox_prefix
from fleetward.services.errors import FleetwardError
from fleetward.services.jetstream.escape import escaped_text, plain_text

log = logging.getLogger("fleetward.nats")

REPORT_EVERY_S = 1.0  # at most one log line a second about unreadable messages

# nats-py's MSG_RE and HMSG_RE with `\s` (which includes \v and \f) narrowed to what nats-server
# sends between fields: space and tab; CR and LF end the line.
_FIELD = rb"([^ \t\r\n]+)"
MSG_RE = re.compile(rb"\AMSG[ \t]+" + _FIELD + rb"[ \t]+" + _FIELD + rb"[ \t]+"
                    rb"(" + _FIELD + rb"[ \t]+)?(\d+)\r\n")  # fmt: skip
HMSG_RE = re.compile(rb"\AHMSG[ \t]+" + _FIELD + rb"[ \t]+" + _FIELD + rb"[ \t]+"
                     rb"(" + _FIELD + rb"[ \t]+)?(\d+)[ \t]+(\d+)\r\n")  # fmt: skip

# nats-py's own ``Parser.parse``, its code unchanged, reading the two patterns above where it
# reads its module's (the function looks them up by name in its globals at every control line).
_parse = cast(
    Callable[[nats_parser.Parser, bytes], Awaitable[None]],
    types.FunctionType(
        nats_parser.Parser.parse.__code__,
        {**vars(nats_parser), "MSG_RE": MSG_RE, "HMSG_RE": HMSG_RE},
        "parse",
    ),
)


class FleetwardParser(nats_parser.Parser):
    """nats-py's protocol parser, splitting ``MSG``/``HMSG`` lines as nats-server writes them."""

    async def parse(self, data: bytes = b"") -> None:
        """Feed ``data`` (bytes read from the socket) to the parser."""
        await _parse(self, data)


class FleetwardNats(Client):
    """A nats-py ``Client`` that delivers every message it receives (see the module docstring).

    ``unreadable`` counts the messages whose subject needed escapes or whose headers could not
    be read."""

    def __init__(self) -> None:
        super().__init__()
        self._ps = FleetwardParser(self)
        self.unreadable = 0
        self._reported_at = -REPORT_EVERY_S

    def _build_message(
        self,
        sid: int,
        subject: bytes,
        reply: bytes,
        data: bytes,
        headers: dict[str, str] | None,
    ) -> Msg:
        """The ``Msg`` of one delivery; subject and reply never fail to decode.

        A subject that needs escapes (not printable UTF-8, or holding a backslash) comes escaped
        (services/jetstream/escape.py) and is reported. A reply is kept as it is whenever it
        decodes, so that a response still finds its requester; one that does not comes escaped
        (and a response goes nowhere)."""
        text = plain_text(subject)
        if text is None:
            text = escaped_text(subject)
            self._report("a message on a subject that needs escapes, delivered escaped", text)
        try:
            back = reply.decode()
        except UnicodeDecodeError:
            back = escaped_text(reply)
        return self.msg_class(
            subject=text, reply=back, data=data, headers=headers, _client=self, _sid=sid
        )

    async def _process_headers(self, headers: bytes | None) -> dict[str, str] | None:
        """nats-py's header parsing; headers it cannot read make no headers (None)."""
        if not headers:  # most deliveries: no coroutine of nats-py's to make and await
            return None
        try:
            parsed: dict[str, str] | None = await super()._process_headers(headers)
        except Exception:  # any failure here would end the read loop, for every reader
            raw = bytes(headers or b"")
            self._report("a message with headers nats-py cannot read, delivered without them",
                         escaped_text(raw))  # fmt: skip
            return None
        return parsed

    def _report(self, what: str, text: str) -> None:
        self.unreadable += 1
        now = time.monotonic()
        if now - self._reported_at >= REPORT_EVERY_S:
            self._reported_at = now
            shown = text if len(text) <= 200 else f"{text[:200]}... ({len(text)} characters)"
            log.warning("%s: %s (%d such on this connection)", what, shown, self.unreadable)


def server_list(servers: str | list[str]) -> list[str]:
    """The server URLs of ``servers``: a list as it is, a string split at its commas
    (``FLEETWARD_NATS_URL=nats://fw-1:4222,nats://fw-2:4222,nats://fw-3:4222``: the nodes of a
    cluster; nats-py reads a string as one URL). The client connects to one of them and moves
    to another when it goes."""
    if isinstance(servers, list):
        return servers
    return [url.strip() for url in servers.split(",") if url.strip()]


async def connect(servers: str | list[str], **options: Any) -> FleetwardNats:
    """A connected ``FleetwardNats``: ``nats.connect(servers, **options)`` with this class."""
    nc = FleetwardNats()
    await nc.connect(server_list(servers), **options)
    return nc


FIRST_CONNECT_S = 10.0  # the first connect, retries included (reconnects later are unbounded)


async def sign_in(
    nc: Client,
    servers: str | list[str],
    *,
    creds: Path | None,
    identity: str,
    deadline_s: float = FIRST_CONNECT_S,
    hint: str = "",
    **options: Any,
) -> None:
    """Connect ``nc`` as ``identity`` with its credentials file ``creds`` (None: a server
    without authentication), replies on that identity's own inbox prefix (``schemas/grants.py``:
    it may read no other). The first connect gives up after ``deadline_s`` seconds: nats-py would
    retry it forever with unlimited reconnects. Raises ``FleetwardError``: the server refused the
    credentials (revoked, expired, or of other signing keys: at once, a refusal is not retried),
    or cannot be reached (``hint`` follows the cause)."""
    if creds is not None:
        options |= {"user_credentials": str(creds), "inbox_prefix": inbox_prefix(identity)}
    options.setdefault("name", identity)
    given: Callable[[Exception], Awaitable[None]] = options.get("error_cb") or _log_error
    signing_in = True

    async def on_error(exc: Exception) -> None:
        await given(exc)
        if signing_in and _refused(exc):  # raised out of nats-py's retry loop of the connect
            raise exc

    try:
        with anyio.fail_after(deadline_s):
            await nc.connect(server_list(servers), **(options | {"error_cb": on_error}))
        signing_in = False
    except Exception as exc:  # nats-py raises many types; all mean the same here
        cause = nc.last_error or exc  # the deadline's TimeoutError hides the real cause
        with contextlib.suppress(Exception):
            await nc.close()
        if _refused(cause):
            raise FleetwardError(
                f"NATS at {servers} refused the credentials in {creds} ({identity}): revoked, "
                "expired, or issued by signing keys this server does not trust"
            ) from None
        raise FleetwardError(
            f"cannot reach NATS at {servers} ({type(cause).__name__}: {cause or 'no answer'})"
            + hint
        ) from None


def _refused(exc: BaseException) -> bool:
    """The server refused the credentials (``-ERR 'Authorization Violation'``)."""
    return "authorization violation" in str(exc).lower()


_dropped: dict[int, tuple[float, int]] = {}  # subscription id: (time of its last line, drops)


async def _log_error(exc: Exception) -> None:
    """What nats-py does with an error when given no ``error_cb``, but a slow consumer's drops
    (``SlowConsumerError``: a subscription's pending limits were reached, e.g. by a flood aimed
    at it) are one warning line per subject every ``REPORT_EVERY_S`` with their count, never a
    traceback per dropped message."""
    if isinstance(exc, SlowConsumerError):
        now, key = time.monotonic(), exc.sid
        last, count = _dropped.get(key, (-REPORT_EVERY_S, 0))
        count += 1
        if now - last < REPORT_EVERY_S:
            _dropped[key] = (last, count)
            return
        _dropped[key] = (now, 0)
        subject = exc.sub.subject if exc.sub is not None else exc.subject
        log.warning("nats: the subscription to %r dropped %d message(s): its pending limits "
                    "were reached (a slow consumer)", subject, count)  # fmt: skip
        return
    logging.getLogger("nats.aio.client").error("nats: encountered error", exc_info=exc)


async def connect_as(
    servers: str | list[str], creds: Path, identity: str, **options: Any
) -> FleetwardNats:
    """A connected ``FleetwardNats`` acting as ``identity`` (``sign_in``; ``options`` go to
    nats-py's connect). Raises ``FleetwardError`` as ``sign_in`` does."""
    nc = FleetwardNats()
    await sign_in(nc, servers, creds=creds, identity=identity, **options)
    return nc
