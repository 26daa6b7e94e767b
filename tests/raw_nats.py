"""Publishing what nats-py will not: subjects and headers as raw bytes, spoken over a plain TCP
socket in the NATS client protocol (https://docs.nats.io/nats-protocol/nats-protocol:
``PUB <subject> [reply] <#bytes>`` and ``HPUB <subject> [reply] <#header bytes> <#total bytes>``,
fields separated by spaces, lines ended by CRLF). nats-py encodes every subject from ``str``
and checks it, so a test that needs ``fw.agent.\\xff\\xfe`` on the stream has to write it itself.

Each publish asks for a JetStream acknowledgement on an inbox of its own, so the caller learns
the stream sequence the server stored the message at, or the error it answered with.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import nkeys
from anyio.abc import SocketStream

from fleetward.services.auth import jwt

CRLF = b"\r\n"


@dataclass(frozen=True)
class Raw:
    """One message to publish: subject, payload and optional header block
    (``NATS/1.0\\r\\n...\\r\\n\\r\\n``), all bytes, sent as they are."""

    subject: bytes
    data: bytes = b""
    headers: bytes | None = None


class _Lines:
    """Reads the server's protocol lines and payloads from ``stream``."""

    def __init__(self, stream: SocketStream) -> None:
        self.stream, self.buf = stream, b""

    async def _fill(self) -> None:
        self.buf += await self.stream.receive()

    async def line(self) -> bytes:
        while CRLF not in self.buf:
            await self._fill()
        line, self.buf = self.buf.split(CRLF, 1)
        return line

    async def exactly(self, n: int) -> bytes:
        while len(self.buf) < n + len(CRLF):
            await self._fill()
        data, self.buf = self.buf[:n], self.buf[n + len(CRLF) :]
        return data


def signed(creds: Path, nonce: str) -> dict[str, str]:
    """The CONNECT fields that sign in with a credentials file: its JWT and the nonce signed
    with its seed (base64url, as NATS clients send it)."""
    text = creds.read_text()
    token = jwt.creds_jwt(text)
    seed = text.split("-----BEGIN USER NKEY SEED-----")[1].split()[0]
    signature = nkeys.from_seed(seed.encode()).sign(nonce.encode())
    return {"jwt": token, "sig": base64.urlsafe_b64encode(signature).rstrip(b"=").decode()}


async def publish_raw(
    url: str,
    messages: list[Raw],
    *,
    creds: Path,
    stored: bool = True,
    timeout: float = 10.0,  # noqa: ASYNC109  # a deadline for the whole exchange
) -> list[dict[str, Any]]:
    """Publish ``messages`` in order on one connection to ``url`` (``nats://host:port``, signed
    in with the credentials file ``creds``: the server's nonce signed with its nkey) and return
    the server's answer to each: a JetStream ack (``{"stream", "seq"}``, or ``{"error": {...}}``
    when the stream refused it). With ``stored=False`` (core NATS subjects no stream takes)
    nothing is asked for: the server has handled every message when it answers a PING, and the
    answer is ``[]``. Raises ``TimeoutError`` after ``timeout`` seconds."""
    host, port = url.removeprefix("nats://").rsplit(":", 1)
    with anyio.fail_after(timeout):
        stream = await anyio.connect_tcp(host, int(port))
        async with stream:
            lines = _Lines(stream)
            info = json.loads((await lines.line()).removeprefix(b"INFO "))
            connect = {"verbose": False, "pedantic": False, "headers": True, "protocol": 1}
            if "nonce" in info:
                connect |= signed(creds, info["nonce"])
            out = b"CONNECT " + json.dumps(connect).encode() + CRLF + b"SUB _INBOX.raw.* 1" + CRLF
            for i, m in enumerate(messages):
                reply = b" _INBOX.raw.%d" % i if stored else b""
                if m.headers is None:
                    out += b"PUB %s%s %d\r\n%s\r\n" % (m.subject, reply, len(m.data), m.data)
                else:
                    size = len(m.headers) + len(m.data)
                    out += b"HPUB %s%s %d %d\r\n" % (m.subject, reply, len(m.headers), size)
                    out += m.headers + m.data + CRLF
            await stream.send(out + b"PING" + CRLF)
            answers: dict[int, dict[str, Any]] = {}
            while stored and len(answers) < len(messages):
                line = await lines.line()
                if line.startswith(b"PING"):
                    await stream.send(b"PONG" + CRLF)
                elif line.startswith(b"-ERR"):
                    raise AssertionError(f"nats-server refused the connection: {line!r}")
                elif line.startswith((b"MSG ", b"HMSG ")):
                    args = line.split()
                    index = int(args[1].rsplit(b".", 1)[1])
                    header = int(args[-2]) if args[0] == b"HMSG" else 0
                    body = await lines.exactly(int(args[-1]))
                    answers[index] = json.loads(body[header:])
            while not stored and await lines.line() != b"PONG":
                pass
    return [answers[i] for i in range(len(messages))] if stored else []
