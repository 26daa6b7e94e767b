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
- ``issued/<kind>/<name>.json``  the user public keys issued to one identity (``Keys``)
- ``revoked.json``                revoked user public key -> since (what the account JWT carries)
- ``creds/<kind>/<name>.creds``   issued credentials (kind: agents, users, services)
- ``nats-auth.conf``              the server settings that trust this store (``include`` it)

Issuing writes the identity's own two files (its key list and its credentials), so it costs the
same with 10 identities or 100,000; revoking rewrites ``revoked.json`` and ``account.jwt``, whose
size is the number of revoked keys. Writers of the store (issue, revoke, init) take an flock on
``.lock``, across processes; every file is replaced atomically (written aside, then renamed).

Stores of earlier versions kept everything in one ``issued.json``; the first use of such a store
(issue, revoke, ``is_revoked``/``ensure``) moves it to the files above and renames it
``issued.json.migrated`` (kept for the record, no longer read).

Whoever holds this folder can issue any identity: keep it on the admin's machine (0700).
"""

from __future__ import annotations

import contextlib
import fcntl
import math
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


class Keys(msgspec.Struct, kw_only=True):
    """``issued/<kind>/<name>.json``: the user public keys issued to one identity, oldest
    first (``U...`` nkeys)."""

    keys: list[str] = msgspec.field(default_factory=list)


class Issued(msgspec.Struct, kw_only=True):
    """``issued.json`` of earlier versions (read once, to migrate it): identity -> user public
    keys; revoked user key -> since (seconds since the epoch: credentials issued up to then are
    refused)."""

    keys: dict[str, list[str]] = msgspec.field(default_factory=dict)
    revoked: dict[str, int] = msgspec.field(default_factory=dict)


# revoked.json: revoked user public key -> since (seconds since the epoch)
_REVOKED: Final = msgspec.json.Decoder(dict[str, int])


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
        self._keys: dict[str, nkeys.KeyPair] = {}  # read once: keys never change once made

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
                self._sign_all({})
        return self

    def _key(self, name: str) -> nkeys.KeyPair:
        if name in self._keys:
            return self._keys[name]
        try:
            key = nkeys.from_seed((self.root / "keys" / f"{name}.nk").read_bytes().strip())
        except OSError:
            raise FleetwardError(
                f"no Fleetward signing keys in {self.root}: run 'fleetward auth init' there, "
                "or set FLEETWARD_AUTH_DIR to the folder that holds them"
            ) from None
        self._keys[name] = key
        return key

    def _sign_all(self, revoked: dict[str, int]) -> None:
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
        self._sign_account(revoked)
        user = jwt.new_key(nkeys.PREFIX_BYTE_USER)
        sys_user = jwt.encode(
            jwt.public(user),
            "svc:system",
            {"type": "user", "pub": {"allow": ["$SYS.>"]}, "sub": {"allow": ["_INBOX.>"]},
             "subs": -1, "data": -1, "payload": -1},
            system,
        )  # fmt: skip
        _write(self.root / "system.creds", jwt.creds_file(sys_user, user))

    def _sign_account(self, revoked: dict[str, int]) -> str:
        """Sign the account JWT with ``revoked`` (user public key -> since) and save both
        (``revoked.json`` first: it is what the next signing starts from). Under the lock."""
        nats: dict[str, Any] = {
            "type": "account",
            "limits": jwt.JETSTREAM_LIMITS,
            "signing_keys": [jwt.public(self._key("signing"))],
        }
        if revoked:
            nats["revocations"] = revoked
        token = jwt.encode(jwt.public(self._key("account")), ACCOUNT, nats, self._key("operator"))
        _write(self.root / "revoked.json", msgspec.json.encode(revoked).decode())
        _write(self.root / "account.jwt", token)
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
        """Where ``identity``'s credentials file is kept, e.g. ``creds/agents/a-1.creds``.
        Raises ``ValueError`` for a string that is no identity."""
        return self._path("creds", identity, ".creds")

    def _path(self, folder: str, identity: str, suffix: str) -> Path:
        kind = CREDS_DIRS[identity_kind(identity)]
        return self.root / folder / kind / f"{identity.rsplit(':', maxsplit=1)[-1]}{suffix}"

    def issue(
        self,
        identity: str,
        *,
        grants: Grants | None = None,
        expires_s: float = DEFAULT_EXPIRY_S,
    ) -> Path:
        """Issue new credentials to ``identity`` (a new user key; earlier ones stay valid until
        revoked) with ``grants`` (default: ``grants_for(identity)``), valid for ``expires_s``
        seconds from now (0: until revoked); returns the file's path. Writes the identity's own
        files only: the cost does not grow with the number of identities issued. Raises
        ``ValueError`` for a string that is no identity or a negative ``expires_s``."""
        if expires_s < 0:
            raise ValueError(f"expires_s must be 0 (until revoked) or more, not {expires_s}")
        grants = grants_for(identity) if grants is None else grants
        path, record = self.creds_path(identity), self._path("issued", identity, ".json")
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
        extra = {"exp": math.ceil(time.time() + expires_s)} if expires_s else {}
        token = jwt.encode(jwt.public(user), identity, nats, self._key("signing"), **extra)
        self._migrate()
        with self._locked():  # the key list is read, extended and replaced: one writer
            keys = self._keys_of(record)
            keys.keys.append(jwt.public(user))
            _write(record, msgspec.json.encode(keys).decode())  # first: revoke finds the key
            _write(path, jwt.creds_file(token, user))
        return path

    def ensure(self, identity: str) -> Path:
        """``identity``'s credentials file, issued now (until revoked) if there is none or it
        was revoked or has expired."""
        path = self.creds_path(identity)
        if path.exists() and not self.is_revoked(path) and not is_expired(path):
            return path
        return self.issue(identity)

    def is_revoked(self, creds: Path) -> bool:
        """Whether the credentials in ``creds`` were revoked by this store. Raises ``OSError``
        when the file cannot be read, ``ValueError`` when it holds no JWT."""
        claims = jwt.claims(jwt.creds_jwt(creds.read_text()))
        self._migrate()
        since = self._revoked().get(str(claims.get("sub")))
        return since is not None and int(claims.get("iat", 0)) <= since

    def revoke(self, identity: str) -> str:
        """Revoke every credential issued to ``identity`` so far; returns the re-signed account
        JWT, which ``push_account`` sends to the server. Raises ``FleetwardError`` when the store
        never issued credentials to ``identity``, ``ValueError`` for a string that is no
        identity."""
        record = self._path("issued", identity, ".json")
        self._migrate()
        with self._locked():
            keys = self._keys_of(record).keys
            if not keys:
                raise FleetwardError(f"no credentials were issued to {identity!r} by {self.root}")
            revoked, now = self._revoked(), int(time.time())
            for key in keys:
                revoked[key] = now
            return self._sign_account(revoked)

    def revoked_at(self, identity: str) -> int | None:
        """When ``identity``'s credentials were last revoked (seconds since the epoch), None
        when never, or when this folder does not know what was issued to it (an API host with
        copied credentials only). Raises ``ValueError`` for a string that is no identity."""
        keys = self._keys_of(self._path("issued", identity, ".json")).keys
        revoked = self._revoked()
        return max((revoked[k] for k in keys if k in revoked), default=None)

    def account_jwt(self) -> str:
        return (self.root / "account.jwt").read_text().strip()

    def _keys_of(self, record: Path) -> Keys:
        try:
            return msgspec.json.decode(record.read_bytes(), type=Keys)
        except FileNotFoundError:
            return Keys()

    def _revoked(self) -> dict[str, int]:
        try:
            return _REVOKED.decode((self.root / "revoked.json").read_bytes())
        except FileNotFoundError:  # a store of an earlier version, before its migration
            return {}

    def _migrate(self) -> None:
        """Move an ``issued.json`` of an earlier version to ``issued/`` and ``revoked.json``
        (merged with what is there, so a migration cut short runs again harmlessly), then
        rename it ``issued.json.migrated``. Costs one ``stat`` when there is nothing to do."""
        old = self.root / "issued.json"
        if not old.exists():
            return
        with self._locked():
            if not old.exists():  # another process migrated it meanwhile
                return
            issued = msgspec.json.decode(old.read_bytes(), type=Issued)
            for identity, keys in issued.keys.items():
                record = self._path("issued", identity, ".json")
                have = self._keys_of(record)
                have.keys += [k for k in keys if k not in have.keys]
                _write(record, msgspec.json.encode(have).decode())
            revoked = self._revoked()
            for key, since in issued.revoked.items():
                revoked[key] = max(since, revoked.get(key, since))
            _write(self.root / "revoked.json", msgspec.json.encode(revoked).decode())
            old.replace(self.root / "issued.json.migrated")

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


def is_expired(creds: Path, margin_s: float = 0.0) -> bool:
    """Whether the credentials in ``creds`` expire within ``margin_s`` seconds from now (their
    JWT's ``exp``; none: they never expire). Raises ``OSError`` when the file cannot be read,
    ``ValueError`` when it holds no JWT."""
    exp = jwt.claims(jwt.creds_jwt(creds.read_text())).get("exp")
    return isinstance(exp, int | float) and exp <= time.time() + margin_s


__all__ = ["AuthStore", "identity_of", "inbox_prefix", "is_expired"]
