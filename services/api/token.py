"""Tokens for the HTTP API and the dashboard: who asks (a person), with what role, until when,
signed with HMAC-SHA256 by a key kept beside the NATS signing keys
(``FLEETWARD_AUTH_DIR/api.key``, 0600, made on first use). Whoever holds that folder issues them
(``fleetward api token --person user:NAME [--role operator]``), as it issues credentials.

Roles: ``viewer`` reads (every GET route); ``operator`` also calls the write routes
(``services/api/write.py``). An operator token lends no power of its own: each write is
published as the token's person, with that person's own NATS credentials, so the stream's role
rules (``schemas/roles.py``) judge it exactly as they judge the person's CLI.

A token is ``fwv1.<payload>.<signature>`` (base64url without padding; the payload is JSON
``{"sub", "role", "iat", "exp"}``, ``exp`` 0 for none). ``verify`` is pure: it takes the key.

Revocation is by key: ``fleetward api token --rotate-key`` makes a new key, and every token
signed by the old one fails from the API's next start; revoking a person's NATS credentials
(``fleetward people revoke``) stops their writes at once, whatever token they hold.

Roles: ``viewer`` (a person: the read routes and the dashboard) and ``agent`` (an agent, ``sub``
its id: only the HTTPS ingress, ``/api/v1/ingress``, which publishes as that agent with its own
NATS credentials; ``fleetward api token --agent ID``). No read route accepts an agent's token,
and the ingress accepts no other.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import math
import os
import secrets
from pathlib import Path
from typing import Final, Literal

import msgspec

from fleetward.schemas.grants import identity_kind

PREFIX: Final = "fwv1"
KEY_FILE: Final = "api.key"
MAX_TOKEN: Final = 2048  # characters: anything longer is refused unread
MAX_EXPIRES_S: Final = 10 * 366 * 86_400  # seconds: a token lives ten years at most
Role = Literal["viewer", "operator", "agent"]
ROLES: Final[tuple[Role, ...]] = ("viewer", "operator")  # a person's; an agent's is "agent"


class Claims(msgspec.Struct, frozen=True):
    sub: str  # user:<name>; an agent's id for the role agent
    role: Role
    iat: int
    exp: int = 0  # seconds since the epoch; 0: none


class BadToken(ValueError):
    """A token that is malformed, forged, expired or not a person's: why, in one line."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(key: bytes, signed: str) -> str:
    return _b64(hmac.new(key, signed.encode(), hashlib.sha256).digest())


def _signed(key: bytes, sub: str, *, kind: str, role: Role, now: float, expires_s: float) -> str:
    """A token for ``sub``, which must be an identity of ``kind`` (``BadToken`` otherwise)."""
    try:
        found = identity_kind(sub)
    except ValueError as exc:
        raise BadToken(str(exc)) from None
    if found != kind:
        what = "tokens are for people (user:NAME)" if kind == "user" else (
            "agent tokens are for agents (their id)"
        )  # fmt: skip
        raise BadToken(f"{sub} is not {'a person' if kind == 'user' else 'an agent'}: {what}")
    if not 0 <= expires_s <= MAX_EXPIRES_S:  # NaN too
        raise BadToken(f"a token is valid 0 (until the key changes) to {MAX_EXPIRES_S} seconds "
                       "(ten years)")  # fmt: skip
    exp = math.ceil(now + expires_s) if expires_s > 0 else 0
    payload = _b64(msgspec.json.encode(Claims(sub, role, int(now), exp)))
    signed = f"{PREFIX}.{payload}"
    return f"{signed}.{_sign(key, signed)}"


def issue(
    key: bytes, person: str, now: float, expires_s: float = 0.0, role: Role = "viewer"
) -> str:
    """A ``role`` token for ``person`` (``user:<name>``), valid ``expires_s`` seconds (0: until
    the key changes). Raises ``BadToken`` for an identity that is not a person's, or a role
    that is not ``ROLES``'."""
    if role not in ROLES:
        raise BadToken(f"no token role {role!r}: it is one of {', '.join(ROLES)}")
    return _signed(key, person, kind="user", role=role, now=now, expires_s=expires_s)


def issue_agent(key: bytes, agent: str, now: float, expires_s: float = 0.0) -> str:
    """An agent token (role ``agent``) for ``agent`` (an agent id), valid ``expires_s`` seconds
    (0: until the key changes): the HTTPS ingress publishes with it as that agent. Raises
    ``BadToken`` for an identity that is not an agent's."""
    return _signed(key, agent, kind="agent", role="agent", now=now, expires_s=expires_s)


def verify(key: bytes, token: str, now: float) -> Claims:
    """The claims of ``token`` signed with ``key`` and not expired at ``now``; else ``BadToken``."""
    if len(token) > MAX_TOKEN:
        raise BadToken("the token is too long")
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise BadToken(f"not a Fleetward token ({PREFIX}.<payload>.<signature>)")
    if not hmac.compare_digest(_sign(key, f"{parts[0]}.{parts[1]}"), parts[2]):
        raise BadToken("the token's signature does not match: issued by another key, or altered")
    try:
        claims = msgspec.json.decode(_unb64(parts[1]), type=Claims)
    except (ValueError, msgspec.DecodeError) as exc:
        raise BadToken(f"the token's payload cannot be read: {exc}") from None
    if claims.exp > now + MAX_EXPIRES_S or claims.iat > now + MAX_EXPIRES_S:
        raise BadToken("the token's times are out of range")
    if claims.exp and now >= claims.exp:
        raise BadToken("the token has expired: issue a new one (fleetward api token)")
    return claims


def key_path(auth_dir: Path) -> Path:
    return auth_dir / KEY_FILE


def load_key(auth_dir: Path, *, create: bool = False, rotate: bool = False) -> bytes:
    """The signing key in ``auth_dir``; made (or, with ``rotate``, replaced) when asked.
    Raises ``FileNotFoundError`` when there is none and ``create`` is false."""
    path = key_path(auth_dir)
    if rotate or (create and not path.is_file()):
        auth_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        if rotate:
            tmp.replace(path)
        else:
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)  # atomic: the first of two processes making it wins
            tmp.unlink()
    return bytes.fromhex(path.read_text().strip())
