"""The keys Fleetward signs credentials with, and the credentials it issued (DESIGN 3.7).

Mechanism: NATS operator mode (decentralized JWT authentication). Fleetward is the operator of
one account, ``FLEETWARD``, that holds its streams. A credential is a user JWT signed by the
account's signing key, carrying its identity as ``name`` and its permissions
(``schemas/grants.py``). The server verifies the signature chain on connect with no per-user
state and no round trip, so 100,000 agents cost nothing until they connect. Revoking an
identity adds its user keys to the account JWT's ``revocations`` and pushes the re-signed
account JWT to the server's resolver (``$SYS.REQ.CLAIMS.UPDATE``, system account): the server
closes their open connections at once and refuses their credentials from then on.

A store is a folder (``FLEETWARD_AUTH_DIR``, by default ``$FLEETWARD_HOME/auth``):

- ``keys/*.nk``                   operator, account, signing and system account seeds (0600)
- ``operator.jwt``, ``account.jwt``, ``system.jwt``  the signed claims
- ``system.creds``                the system user that pushes account updates
- ``issued.json``                 identity -> the user public keys issued to it, and revocations
- ``creds/<kind>/<name>.creds``   issued credentials (kind: agents, users, services)
- ``nats-auth.conf``              the server settings that trust this store (``include`` it)

Whoever holds this folder can issue any identity: keep it on the admin's machine (0700).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import msgspec
import nkeys

from fleetward.schemas.grants import Grants, grants_for, identity_kind, inbox_prefix
from fleetward.services.auth import jwt
from fleetward.services.errors import FleetwardError

ACCOUNT: Final = "FLEETWARD"
SYSTEM: Final = "SYS"
CREDS_DIRS: Final = {"agent": "agents", "user": "users", "svc": "services"}
# How long an issued credential is valid (seconds); 0: until revoked.
DEFAULT_EXPIRY_S: Final = 0


class Issued(msgspec.Struct, kw_only=True):
    """What the store has issued: identity -> user public keys; revoked user key -> since
    (seconds since the epoch: credentials issued up to then are refused)."""

    keys: dict[str, list[str]] = msgspec.field(default_factory=dict)
    revoked: dict[str, int] = msgspec.field(default_factory=dict)


def identity_of(creds: Path) -> str:
    """The identity a credentials file was issued to (its JWT's ``name``). Raises
    ``FleetwardError`` when the file cannot be read or is not a Fleetward credential."""
    try:
        claims = jwt.claims(jwt.creds_jwt(creds.read_text()))
        name = claims["name"]
        identity_kind(name)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FleetwardError(f"{creds} is not a Fleetward credentials file: {exc}") from None
    return str(name)


def _write(path: Path, text: str, mode: int = 0o600) -> None:
    """Write atomically, readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    tmp.replace(path)


class AuthStore:
    """The signing keys and issued credentials in ``root`` (see the module's docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    # ---- the keys -------------------------------------------------------------------------------

    def exists(self) -> bool:
        return (self.root / "keys" / "signing.nk").exists()

    def init(self) -> AuthStore:
        """Create the operator, account and system keys and claims if missing (idempotent)."""
        with self._locked():
            if not self.exists():
                keys = {
                    "operator": jwt.new_key(nkeys.PREFIX_BYTE_OPERATOR),
                    "account": jwt.new_key(nkeys.PREFIX_BYTE_ACCOUNT),
                    "signing": jwt.new_key(nkeys.PREFIX_BYTE_ACCOUNT),
                    "system": jwt.new_key(nkeys.PREFIX_BYTE_ACCOUNT),
                }
                for name in ("operator", "account", "system"):  # signing last: exists() is true
                    _write(self.root / "keys" / f"{name}.nk", keys[name].seed.decode())
                _write(self.root / "keys" / "signing.nk", keys["signing"].seed.decode())
                self._sign_all(Issued())
        return self

    def _key(self, name: str) -> nkeys.KeyPair:
        try:
            return nkeys.from_seed((self.root / "keys" / f"{name}.nk").read_bytes().strip())
        except OSError:
            raise FleetwardError(
                f"no Fleetward signing keys in {self.root}: run 'fleetward auth init' there, "
                "or set FLEETWARD_AUTH_DIR to the folder that holds them"
            ) from None

    def _sign_all(self, issued: Issued) -> None:
        operator, system = self._key("operator"), self._key("system")
        operator_jwt = jwt.encode(
            jwt.public(operator),
            "fleetward",
            {"type": "operator", "system_account": jwt.public(system)},
            operator,
        )
        system_jwt = jwt.encode(
            jwt.public(system), SYSTEM, {"type": "account", "limits": jwt.SYSTEM_LIMITS}, operator
        )
        _write(self.root / "operator.jwt", operator_jwt)
        _write(self.root / "system.jwt", system_jwt)
        self._sign_account(issued)
        user = jwt.new_key(nkeys.PREFIX_BYTE_USER)
        sys_user = jwt.encode(
            jwt.public(user),
            "svc:system",
            {"type": "user", "pub": {"allow": ["$SYS.>"]}, "sub": {"allow": ["_INBOX.>"]},
             "subs": -1, "data": -1, "payload": -1},
            system,
        )  # fmt: skip
        _write(self.root / "system.creds", jwt.creds_file(sys_user, user))

    def _sign_account(self, issued: Issued) -> str:
        nats: dict[str, Any] = {
            "type": "account",
            "limits": jwt.JETSTREAM_LIMITS,
            "signing_keys": [jwt.public(self._key("signing"))],
        }
        if issued.revoked:
            nats["revocations"] = issued.revoked
        token = jwt.encode(jwt.public(self._key("account")), ACCOUNT, nats, self._key("operator"))
        _write(self.root / "account.jwt", token)
        _write(self.root / "issued.json", msgspec.json.encode(issued).decode())
        return token

    def server_config(self, resolver_dir: Path) -> str:
        """nats-server settings that trust this store: the operator, the system account and a
        full resolver (in ``resolver_dir``) preloaded with the accounts' current claims, so
        revocations pushed later are kept across restarts."""

        def read(name: str) -> str:
            return (self.root / name).read_text().strip()

        system, account = jwt.public(self._key("system")), jwt.public(self._key("account"))
        return (
            f"operator: {read('operator.jwt')}\n"
            f"system_account: {system}\n"
            f'resolver: {{ type: full, dir: "{resolver_dir}", allow_delete: false, '
            'interval: "2m", timeout: "1.9s" }\n'
            f"resolver_preload: {{\n  {system}: {read('system.jwt')}\n"
            f"  {account}: {read('account.jwt')}\n}}\n"
        )

    # ---- credentials ----------------------------------------------------------------------------

    def creds_path(self, identity: str) -> Path:
        """Where ``identity``'s credentials file is kept, e.g. ``creds/agents/a-1.creds``."""
        folder = CREDS_DIRS[identity_kind(identity)]
        return self.root / "creds" / folder / f"{identity.rsplit(':', maxsplit=1)[-1]}.creds"

    def issue(
        self,
        identity: str,
        *,
        grants: Grants | None = None,
        expires_s: float = DEFAULT_EXPIRY_S,
    ) -> Path:
        """Issue new credentials to ``identity`` (a new user key; earlier ones stay valid until
        revoked) with ``grants`` (default: ``grants_for(identity)``); returns the file's path.
        Raises ``ValueError`` for a string that is no identity."""
        grants = grants_for(identity) if grants is None else grants
        user = jwt.new_key(nkeys.PREFIX_BYTE_USER)
        nats: dict[str, Any] = {
            "type": "user",
            "issuer_account": jwt.public(self._key("account")),
            "pub": {"allow": list(grants.publish), "deny": list(grants.deny_publish)},
            "sub": {"allow": list(grants.subscribe)},
            "subs": -1, "data": -1, "payload": -1,
        }  # fmt: skip
        if grants.respond:
            nats["resp"] = {"max": 1, "ttl": 0}
        extra = {"exp": int(time.time() + expires_s)} if expires_s else {}
        token = jwt.encode(jwt.public(user), identity, nats, self._key("signing"), **extra)
        path = self.creds_path(identity)
        with self._locked():
            issued = self._issued()
            issued.keys.setdefault(identity, []).append(jwt.public(user))
            _write(self.root / "issued.json", msgspec.json.encode(issued).decode())
            _write(path, jwt.creds_file(token, user))
        return path

    def ensure(self, identity: str) -> Path:
        """``identity``'s credentials file, issued now if there is none or it was revoked."""
        path = self.creds_path(identity)
        if path.exists() and not self.is_revoked(path):
            return path
        return self.issue(identity)

    def is_revoked(self, creds: Path) -> bool:
        claims = jwt.claims(jwt.creds_jwt(creds.read_text()))
        since = self._issued().revoked.get(str(claims.get("sub")))
        return since is not None and int(claims.get("iat", 0)) <= since

    def revoke(self, identity: str) -> str:
        """Revoke every credential issued to ``identity`` so far; returns the re-signed account
        JWT, which ``push_account`` sends to the server. Raises ``FleetwardError`` when the store
        never issued credentials to ``identity``."""
        with self._locked():
            issued = self._issued()
            keys = issued.keys.get(identity)
            if not keys:
                raise FleetwardError(f"no credentials were issued to {identity!r} by {self.root}")
            now = int(time.time())
            for key in keys:
                issued.revoked[key] = now
            return self._sign_account(issued)

    def account_jwt(self) -> str:
        return (self.root / "account.jwt").read_text().strip()

    def _issued(self) -> Issued:
        path = self.root / "issued.json"
        return msgspec.json.decode(path.read_bytes(), type=Issued) if path.exists() else Issued()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer of the store at a time, across processes (an flock on ``.lock``)."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        with (self.root / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


__all__ = ["AuthStore", "identity_of", "inbox_prefix"]
