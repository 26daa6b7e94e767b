"""Subjects from the wire as text Fleetward can store, log and compare. Pure.

nats-server stores a message on any subject without white space in it (space, tab, CR, LF
delimit the fields of the protocol: https://docs.nats.io/nats-protocol/nats-protocol,
"Field Delimiters"): bytes that are not UTF-8, NUL and other control characters included. Such a
subject is never a Fleetward subject, but it must still reach the reader that dead-letters it,
as text that Postgres ``text`` can hold and a log line can show.

``subject_text`` keeps every subject that is printable UTF-8 without a backslash as it is (the
fast path: all of Fleetward's own) and writes any other with backslash escapes:

- a byte that is not part of valid UTF-8 (always 0x80 or above): ``\\xNN``;
- an unprintable character below U+0080 (NUL, the C0 controls, DEL): ``\\xNN``;
- an unprintable character from U+0080 on (C1 controls, NBSP, ...): ``\\uNNNN`` or
  ``\\UNNNNNNNN``;
- a backslash: ``\\\\``.

So the escaped text is printable ASCII-or-UTF-8 without NUL, and the mapping is one-to-one: two
different subjects never read alike, and the bytes can be recovered from the text.
"""

from __future__ import annotations

_FIRST_ESCAPED_BYTE = 0xDC80  # surrogateescape: byte 0xNN that is not UTF-8 -> U+DCNN
_LAST_ESCAPED_BYTE = 0xDCFF


def plain_text(raw: bytes) -> str | None:
    """``raw`` decoded when it is printable UTF-8 without a backslash (needs no escapes), else
    None."""
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        return None
    return text if text.isprintable() and "\\" not in text else None


def escaped_text(raw: bytes) -> str:
    """``raw`` with backslash escapes (see the module docstring), whatever bytes it holds."""
    out: list[str] = []
    for ch in raw.decode("utf-8", "surrogateescape"):
        code = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif _FIRST_ESCAPED_BYTE <= code <= _LAST_ESCAPED_BYTE:  # valid UTF-8 never decodes here
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch.isprintable():
            out.append(ch)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "".join(out)


def subject_text(raw: bytes) -> str:
    """``raw`` as it is when it needs no escapes, else escaped."""
    text = plain_text(raw)
    return escaped_text(raw) if text is None else text
