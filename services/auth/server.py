"""Telling a running nats-server what the store decided: the account's revocations."""

from __future__ import annotations

import msgspec
from nats.aio.client import Client as NatsClient

from fleetward.services.auth.store import AuthStore
from fleetward.services.errors import FleetwardError
from fleetward.services.jetstream.connection import server_list

CLAIMS_UPDATE = "$SYS.REQ.CLAIMS.UPDATE"  # nats-server's full resolver (system account)


async def push_account(url: str, store: AuthStore) -> None:
    """Send the store's account JWT to the server at ``url`` as the system user. The server
    applies revocations at once: it closes the connections of revoked users. Raises
    ``FleetwardError`` when the server cannot be reached or refuses the update."""
    nc = NatsClient()
    try:
        await nc.connect(
            server_list(url),
            user_credentials=str(store.root / "system.creds"),
            allow_reconnect=False,
            max_reconnect_attempts=0,
            connect_timeout=3,
            name="fleetward-auth",
        )
        reply = await nc.request(CLAIMS_UPDATE, store.account_jwt().encode(), timeout=5.0)
    except Exception as exc:  # nats-py raises many types; all mean the same here
        raise FleetwardError(
            f"cannot push the account's revocations to NATS at {url} ({type(exc).__name__}: "
            f"{exc}); the revocation is saved in {store.root} and is sent at the next start"
        ) from None
    finally:
        await nc.close()
    answer = msgspec.json.decode(reply.data)
    error = answer.get("error") if isinstance(answer, dict) else None
    if error:
        raise FleetwardError(f"NATS at {url} refused the account update: {error}")
