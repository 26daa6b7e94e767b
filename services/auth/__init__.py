"""Credentials: NATS operator-mode JWTs issued and revoked by Fleetward (DESIGN 3.7).

``jwt`` encodes the claims, ``store`` keeps the keys and issues credentials files, ``revoke``
pushes an account's revocations to a running server."""
