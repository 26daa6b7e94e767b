"""The API's listening socket (services/api/server.py ``bind``): the connections it accepts
send small answers at once (TCP_NODELAY), as asyncio sets it only on sockets made with
``IPPROTO_TCP``. Without it, every answer on a kept-alive connection waited for the client's
delayed ACK (~40 ms: the HTTP ingress's heartbeats ran at 20 a second per agent)."""

from __future__ import annotations

import asyncio
import socket

from fleetward.services.api.server import bind


async def test_accepted_connections_have_nodelay() -> None:
    accepted: asyncio.Queue[int] = asyncio.Queue()

    def connected(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        accepted.put_nowait(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    listening = bind("127.0.0.1", 0)
    server = await asyncio.start_server(connected, sock=listening)
    async with server:
        port = listening.getsockname()[1]
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(accepted.get(), 10) != 0
        writer.close()
