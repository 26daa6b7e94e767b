"""FleetwardNats and the escaping of subjects: what nats-py 2.16 does wrong with some subjects and
headers, that the overrides of its private methods fix it, and that those private methods are
still there, named and shaped as overridden. A nats-py release that renames or reshapes them
fails here, loudly, before any reader silently falls back to nats-py's behaviour."""

from __future__ import annotations

import inspect
import logging
import random
import re
from typing import Any

import pytest
from nats.aio.client import Client
from nats.errors import ProtocolError
from nats.protocol import parser as nats_parser

from fleetward.services.jetstream.connection import FleetwardNats, FleetwardParser
from fleetward.services.jetstream.escape import escaped_text, plain_text, subject_text

ACK = b"$JS.ACK.FW_EVENTS.c.1.7.7.1700000000000000000.0"


# ---- escaping ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (b"fw.agent.a-1_B", "fw.agent.a-1_B"),
        (b"fw.agent.\xc3\xa9", "fw.agent.\u00e9"),  # printable UTF-8 stays as it is
        (b"fw.agent.\xff\xfe", "fw.agent.\\xff\\xfe"),
        (b"fw.agent.\xed\xa0\x80", "fw.agent.\\xed\\xa0\\x80"),  # an encoded surrogate
        (b"fw.agent.\xc3", "fw.agent.\\xc3"),  # a truncated sequence
        (b"fw.agent.a1\x00x", "fw.agent.a1\\x00x"),
        (b"fw.agent.a\x0bb\x0c\x7f", "fw.agent.a\\x0bb\\x0c\\x7f"),
        (b"fw.agent.\xc2\x85\xc2\xa0", "fw.agent.\\u0085\\u00a0"),  # C1 control, NBSP
        (b"fw.agent.\xf3\xa0\x80\x81", "fw.agent.\\U000e0001"),  # a tag character
        (b"fw.agent.a\\xff", "fw.agent.a\\\\xff"),  # a backslash: doubled
    ],
)
def test_a_subject_needing_escapes_is_escaped_and_any_other_kept(raw: bytes, shown: str) -> None:
    assert subject_text(raw) == shown
    kept = shown == raw.decode("utf-8", "replace")
    assert plain_text(raw) == (shown if kept else None)


def unescape(text: str) -> bytes:
    """The bytes ``escaped_text`` was given (the inverse the module docstring promises)."""
    out = bytearray()
    for m in re.finditer(r"\\(\\|x..|u.{4}|U.{8})|(.)", text, re.DOTALL):
        escape, char = m.groups()
        if char is not None:
            out += char.encode()
        elif escape == "\\":
            out += b"\\"
        elif escape[0] == "x" and int(escape[1:], 16) >= 0x80:  # a byte that was not UTF-8
            out.append(int(escape[1:], 16))
        else:
            out += chr(int(escape[1:], 16)).encode()
    return bytes(out)


def test_escaping_is_one_to_one_and_always_storable_text() -> None:
    rng = random.Random(11)
    alphabet = [0, 9, 0x0B, 0x0C, 0x2E, 0x41, 0x5C, 0x78, 0x7F, 0x80, 0x85, 0xC2, 0xC3, 0xA9,
                0xE2, 0x82, 0xAC, 0xED, 0xA0, 0xF0, 0x9F, 0x98, 0x80, 0xFE, 0xFF]  # fmt: skip
    seen: dict[str, bytes] = {}
    for _ in range(20_000):
        raw = bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))
        text = escaped_text(raw)
        assert unescape(text) == raw, (raw, text)
        assert seen.setdefault(text, raw) == raw  # no two inputs read alike
        assert "\x00" not in text and text.isprintable()
        text.encode()  # no lone surrogate: Postgres text and any log can hold it
        assert subject_text(raw) in (text, raw.decode("utf-8", "replace"))


# ---- the nats-py internals FleetwardNats relies on (nats-py 2.16.0) --------------------------


def params(function: Any) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_the_overridden_nats_py_methods_are_still_there_and_shaped_as_overridden() -> None:
    assert params(Client._build_message) == ["self", "sid", "subject", "reply", "data", "headers"]
    assert inspect.iscoroutinefunction(Client._process_headers)
    assert params(Client._process_headers) == ["self", "headers"]
    # the message path calls both by name, so the overrides are the ones that run
    assert {"_process_headers", "_build_message"} <= set(Client._process_msg.__code__.co_names)
    # the read loop feeds self._ps, which __init__ creates (and FleetwardNats replaces)
    assert {"_ps", "parse"} <= set(Client._read_loop.__code__.co_names)
    assert isinstance(Client()._ps, nats_parser.Parser)
    assert type(FleetwardNats()._ps) is FleetwardParser
    # Parser.parse reads the control-line patterns as globals of its module, by these names
    code = nats_parser.Parser.parse.__code__
    assert {"MSG_RE", "HMSG_RE"} <= set(code.co_names)
    assert not {"MSG_RE", "HMSG_RE"} & set(code.co_varnames)
    assert not code.co_freevars and nats_parser.Parser.parse.__defaults__ == (b"",)
    assert params(nats_parser.Parser.parse) == ["self", "data"]


class Recorder:
    """Stands in for the client behind a parser: records the messages it is handed."""

    def __init__(self) -> None:
        self.msgs: list[tuple[int, bytes, bytes, bytes, bytes | None]] = []

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
    ) -> None:
        self.msgs.append((sid, bytes(subject), bytes(reply), data, headers))

    async def _process_pong(self) -> None:
        return None


WIRE = (
    b"MSG fw.agent.a\x0bb 7 " + ACK + b" 3\r\nabc\r\n"
    b"HMSG fw.hb.\x0c\t8 " + ACK + b" 12 14\r\nNATS/1.0\r\n\r\nhi\r\n"
    b"MSG fw.agent.ok 9 2\r\nok\r\n"
    b"PONG\r\n"
)


async def test_the_parser_splits_control_lines_on_space_and_tab_only() -> None:
    rec = Recorder()
    parser = FleetwardParser(rec)
    for i in range(0, len(WIRE), 5):  # split reads too
        await parser.parse(WIRE[i : i + 5])
    assert rec.msgs == [
        (7, b"fw.agent.a\x0bb", ACK, b"abc", None),
        (8, b"fw.hb.\x0c", ACK, b"hi", b"NATS/1.0\r\n\r\n"),
        (9, b"fw.agent.ok", b"", b"ok", None),
    ]


async def test_nats_py_still_splits_on_vertical_tab_so_the_parser_override_is_needed() -> None:
    """If this fails, nats-py splits like nats-server now: FleetwardParser may go."""
    with pytest.raises(ProtocolError):
        await nats_parser.Parser(Recorder()).parse(WIRE)


def test_a_subject_nats_py_cannot_decode_is_delivered_escaped() -> None:
    with pytest.raises(UnicodeDecodeError):  # why _build_message is overridden
        Client()._build_message(1, b"fw.agent.\xff", ACK, b"x", None)
    nc = FleetwardNats()
    msg = nc._build_message(1, b"fw.agent.\xff", ACK, b"x", {"A": "b"})
    assert (msg.subject, msg.reply, msg.data, msg.headers) == (
        "fw.agent.\\xff",
        ACK.decode(),
        b"x",
        {"A": "b"},
    )
    assert nc._build_message(2, b"_INBOX.\xfe", b"_INBOX.\xfe", b"", None).reply == "_INBOX.\\xfe"
    assert nc._build_message(3, b"fw.agent.a1", b"", b"", None).subject == "fw.agent.a1"
    assert nc.unreadable == 2


async def test_headers_nats_py_cannot_read_make_a_message_without_headers() -> None:
    bad = b"NATS/1.0 \xff\xfe\r\n\r\n"
    with pytest.raises(UnicodeDecodeError):  # why _process_headers is overridden
        await Client()._process_headers(bad)
    nc = FleetwardNats()
    assert await nc._process_headers(bad) is None
    assert await nc._process_headers(b"NATS/1.0 409 \xff\r\nA: b\r\n\r\n") is None
    assert nc.unreadable == 2
    for good in (b"NATS/1.0\r\nA: b\r\nX-\xff: \xfe\r\n\r\n", b"NATS/1.0 404 No Messages\r\n\r\n"):
        assert await nc._process_headers(good) == await Client()._process_headers(good)
    assert nc.unreadable == 2


async def test_a_flooded_subscriptions_drops_are_one_warning_a_second_not_a_traceback_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """nats-py reports each message a subscription drops (its pending limits reached, e.g. by
    a flood aimed at it) as a SlowConsumerError: counted, and told once per REPORT_EVERY_S per
    subscription, without a traceback."""
    from nats.errors import SlowConsumerError  # noqa: PLC0415

    from fleetward.services.jetstream import connection  # noqa: PLC0415

    connection._dropped.clear()
    loggers = [logging.getLogger("fleetward.nats")]
    disabled = [logger.disabled for logger in loggers]
    for logger in loggers:  # (caught here whatever another test's logging setup did to them)
        logger.addHandler(caplog.handler)
        logger.disabled = False
    try:
        with caplog.at_level("WARNING", "fleetward.nats"):
            for _ in range(500):
                dropped = SlowConsumerError("fw.cmd.a.svc:registry", "", 7, None)
                await connection._log_error(dropped)
    finally:
        for logger, was in zip(loggers, disabled, strict=True):
            logger.removeHandler(caplog.handler)
            logger.disabled = was
    records = list({id(r): r for r in caplog.records}.values())  # (seen once per handler)
    drops = [r for r in records if "dropped" in r.getMessage()]
    assert len(drops) == 1 and drops[0].exc_info is None
    assert "fw.cmd.a.svc:registry" in drops[0].getMessage()
    assert connection._dropped[7][1] == 499  # counted for the next line
