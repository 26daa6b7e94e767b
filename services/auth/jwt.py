"""NATS JWTs (the ``ed25519-nkey`` profile of nats-io/jwt v2), signed with the NATS project's
``nkeys``. Only what Fleetward issues: operator, account and user claims.

The wire format is nats-io/jwt's: a JWS of header ``{"typ":"JWT","alg":"ed25519-nkey"}``, claims
and an Ed25519 signature by the issuer's nkey, each base64url without padding; ``jti`` is the
base32 SHA-512/256 of the claims. The server checks the signature chain: user (signed by an
account signing key), account (signed by the operator), operator (trusted by configuration).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from typing import Any

import msgspec
import nkeys

_HEADER = b'{"typ":"JWT","alg":"ed25519-nkey"}'
UNLIMITED = -1

# An account's limits: JetStream on (storage -1 = unlimited), everything else unlimited.
JETSTREAM_LIMITS: dict[str, Any] = {
    "subs": UNLIMITED, "data": UNLIMITED, "payload": UNLIMITED, "imports": UNLIMITED,
    "exports": UNLIMITED, "wildcards": True, "conn": UNLIMITED, "leaf": UNLIMITED,
    "mem_storage": UNLIMITED, "disk_storage": UNLIMITED, "streams": UNLIMITED,
    "consumer": UNLIMITED,
}  # fmt: skip
SYSTEM_LIMITS: dict[str, Any] = {
    k: v for k, v in JETSTREAM_LIMITS.items() if k not in ("mem_storage", "disk_storage")
}


def new_key(prefix: int) -> nkeys.KeyPair:
    """A fresh nkey (``nkeys.PREFIX_BYTE_OPERATOR``, ``_ACCOUNT`` or ``_USER``)."""
    return nkeys.from_seed(nkeys.encode_seed(secrets.token_bytes(32), prefix))


def public(key: nkeys.KeyPair) -> str:
    return str(key.public_key.decode())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def encode(
    subject: str, name: str, nats: dict[str, Any], signer: nkeys.KeyPair, **extra: Any
) -> str:
    """A signed JWT about ``subject`` (a public nkey) named ``name``; ``nats`` is the claims'
    ``nats`` object (``type``, ``version`` 2 and the type's fields); ``extra`` adds standard
    claims (``exp``, seconds since the epoch)."""
    claims: dict[str, Any] = {
        "jti": "", "iat": int(time.time()), "iss": public(signer), "name": name,
        "sub": subject, "nats": {**nats, "version": 2}, **extra,
    }  # fmt: skip
    digest = hashlib.new("sha512_256", msgspec.json.encode(claims)).digest()
    claims["jti"] = base64.b32encode(digest).decode().rstrip("=")
    body = f"{_b64(_HEADER)}.{_b64(msgspec.json.encode(claims))}"
    return f"{body}.{_b64(signer.sign(body.encode()))}"


def claims(token: str) -> dict[str, Any]:
    """The claims of a JWT, unverified (the server verifies; this reads a credentials file's
    name). Raises ``ValueError`` when ``token`` is not a JWT."""
    try:
        body = token.split(".")[1]
        decoded = msgspec.json.decode(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (IndexError, ValueError, msgspec.DecodeError) as exc:
        raise ValueError(f"not a NATS JWT ({exc})") from None
    if not isinstance(decoded, dict):
        raise ValueError("not a NATS JWT (claims are not an object)")
    return decoded


CREDS_TEMPLATE = """-----BEGIN NATS USER JWT-----
{jwt}
------END NATS USER JWT------

************************* IMPORTANT *************************
NKEY Seed printed below can be used to sign and prove identity.
NKEYs are sensitive and should be treated as secrets.

-----BEGIN USER NKEY SEED-----
{seed}
------END USER NKEY SEED------

*************************************************************
"""


def creds_file(token: str, user: nkeys.KeyPair) -> str:
    """A ``.creds`` file (the user JWT and its seed) that every NATS client reads."""
    return CREDS_TEMPLATE.format(jwt=token, seed=user.seed.decode())


def creds_jwt(text: str) -> str:
    """The user JWT inside a ``.creds`` file's text. Raises ``ValueError`` when there is none."""
    lines = text.splitlines()
    try:
        start = lines.index("-----BEGIN NATS USER JWT-----")
    except ValueError:
        raise ValueError("not a NATS credentials file (no user JWT)") from None
    if start + 1 >= len(lines):
        raise ValueError("not a NATS credentials file (the user JWT is empty)")
    return lines[start + 1].strip()
