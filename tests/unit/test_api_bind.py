"""``fleetward api``'s listening socket (services/api/server.py ``bind``)."""

from __future__ import annotations

import socket

from fleetward.services.api.server import bind


def test_the_api_socket_sends_small_answers_at_once() -> None:
    # uvicorn writes a response's head and body apart: with Nagle on, the body waited for the
    # client's delayed ACK (40 ms a request); accepted connections inherit the option
    with bind("127.0.0.1", 0) as sock:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        client = socket.create_connection(sock.getsockname())
        sock.setblocking(True)
        accepted, _ = sock.accept()
        with client, accepted:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
