"""Credentials from the command line: ``fleetward agents credentials|revoke ID``,
``fleetward people add|revoke NAME`` and ``fleetward auth init|server-config``.

Issuing needs Fleetward's signing keys (``FLEETWARD_AUTH_DIR``, by default
``$FLEETWARD_HOME/auth``; ``make run`` creates them); revoking also tells the running NATS server,
which closes the revoked identity's connections at once (services/auth/store.py)."""

from __future__ import annotations

import argparse
import shutil
from datetime import UTC, datetime
from pathlib import Path

from fleetward.schemas.grants import API_SERVICE, SERVICE_ACTORS, identity_kind, inbox_prefix
from fleetward.schemas.roles import ROLE_AUTHORITY, ROLES
from fleetward.services.auth import jwt
from fleetward.services.auth.server import push_account
from fleetward.services.auth.store import AuthStore
from fleetward.services.cli.args import add_json
from fleetward.services.cli.command import PERSON, Command, console, no_arguments
from fleetward.services.cli.output import Column, Listing, page_of, show
from fleetward.services.client import FleetClient
from fleetward.services.client.roles import read_roles
from fleetward.services.config import Settings
from fleetward.services.errors import FleetwardError
from fleetward.services.runtime.connect import Runtime, acting_as, discover, open_runtime

SERVICES = tuple(s.split(":", 1)[1] for s in (*SERVICE_ACTORS, API_SERVICE))


def signing_keys(settings: Settings) -> AuthStore:
    """The store of signing keys. Raises ``FleetwardError`` when this machine has none."""
    store = AuthStore(settings.auth_dir)
    if not store.exists():
        raise FleetwardError(
            f"no Fleetward signing keys in {settings.auth_dir}: issuing and revoking "
            "credentials happen where the keys are (set FLEETWARD_AUTH_DIR, or create keys "
            "with 'fleetward auth init')"
        )
    return store


def _identity(identity: str) -> str:
    try:
        identity_kind(identity)
    except ValueError as exc:
        raise FleetwardError(str(exc)) from None
    return identity


EXPIRES_HELP = (
    "the credentials expire SECONDS from now: the server refuses them from then on and closes "
    "their connections (default 0: valid until revoked)"
)


def seconds(text: str) -> int:
    """``--expires``: a whole number of seconds, 0 or more. Raises ``argparse.ArgumentTypeError``
    for anything else."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (0 or more)")
    return value


def issue(settings: Settings, identity: str, out: str | None, expires_s: int = 0) -> Path:
    """Issue ``identity`` new credentials valid for ``expires_s`` seconds (0: until revoked),
    copied to ``out`` when given, and say how to use them. Raises ``FleetwardError`` when this
    machine has no signing keys or ``identity`` is none."""
    path = signing_keys(settings).issue(_identity(identity), expires_s=expires_s)
    if out:
        target = Path(out)
        shutil.copyfile(path, target)
        target.chmod(0o600)
        path = target
    exp = jwt.claims(jwt.creds_jwt(path.read_text())).get("exp")
    until = (
        f"they expire {datetime.fromtimestamp(exp, UTC):%Y-%m-%d %H:%M:%S} UTC"
        if isinstance(exp, int)
        else "valid until revoked"
    )
    console.print(f"credentials for {identity}: {path} ({until})")
    console.print(
        f"  connect with them: FLEETWARD_CREDS={path} (CLI, Python client), or any NATS client's "
        f"credentials-file option with inbox prefix {inbox_prefix(identity)} (docs/agents.md)"
    )
    return path


async def revoke(settings: Settings, identity: str) -> None:
    """Revoke every credential of ``identity`` and tell the running server."""
    store = signing_keys(settings)
    store.revoke(_identity(identity))
    url = settings.nats_url or discover(settings)[0]
    await push_account(url, store)
    console.print(
        f"revoked {identity}: its connections to {url} are closed and its credentials refused"
    )


def _people_arguments(people: argparse.ArgumentParser) -> None:
    actions = people.add_subparsers(
        dest="action", metavar="ACTION", required=True, help="what to do"
    )
    add = actions.add_parser(
        "add", help="issue a person credentials (a .creds file), optionally with roles"
    )
    add.add_argument("name", help="the person's name: user:<name> in every event they publish")
    add.add_argument("--out", help="also write the credentials file here")
    add.add_argument("--expires", type=seconds, default=0, metavar="SECONDS", help=EXPIRES_HELP)
    add.add_argument(
        "--role", action="append", default=[], choices=ROLES,
        help="grant this role too (repeatable), as the signing keys' holder",
    )  # fmt: skip
    gone = actions.add_parser("revoke", help="revoke every credential of a person, at once")
    gone.add_argument("name", help="the person's name (user:<name>)")
    for verb, text in (("grant", "grant a person a role (needs admin)"),
                       ("take", "take a role from a person (needs admin)")):  # fmt: skip
        one = actions.add_parser(verb, help=text)
        one.add_argument("name", help="the person's name (user:<name>)")
        one.add_argument("role", choices=ROLES, help=f"one of {', '.join(ROLES)}")
        one.add_argument("--reason", default="", help="why, for the record")
    roles = actions.add_parser("roles", help="the roles people hold now, from the stream")
    roles.add_argument("name", nargs="?", help="one person (default: everyone with a role)")
    add_json(roles, "{rows: [{person, roles}], total, truncated}")


async def _people(settings: Settings, args: argparse.Namespace) -> None:
    identity = f"user:{args.name}" if args.name else ""
    if args.action == "add":
        issue(settings, identity, args.out, args.expires)
        if args.role:
            await grant_as_authority(settings, args.name, args.role)
    elif args.action == "revoke":
        await revoke(settings, identity)
    elif args.action in ("grant", "take"):
        async with open_runtime(settings, identity=PERSON, prepare=False, pool_size=2) as rt:
            client = FleetClient(rt.nc, rt.actor)
            if args.action == "grant":
                await client.grant_role(args.name, args.role, args.reason)
            else:
                await client.revoke_role(args.name, args.role, args.reason)
        done = "granted" if args.action == "grant" else "took"
        console.print(f"{done} {args.role} {'to' if args.action == 'grant' else 'from'} {identity}")
    else:
        async with open_runtime(settings, identity=PERSON, prepare=False, pool_size=2) as rt:
            book = await read_roles(rt.nc)
        now = book.last_seq + 1
        names = [args.name] if args.name else book.people()
        rows = [{"person": name, "roles": list(book.roles(name, now))} for name in names]
        show(console, ROLES_LISTING, page_of(rows), args.json)


ROLES_LISTING = Listing(
    "roles people hold now (from the stream)",
    (Column("person", lambda r: f"user:{r['person']}"),
     Column("roles", lambda r: " ".join(r["roles"]) or "(no role)")),
    empty="nobody holds a role",
)  # fmt: skip


async def grant_as_authority(settings: Settings, person: str, roles: list[str]) -> None:
    """Grant ``user:<person>`` ``roles`` it does not hold yet, as ``ROLE_AUTHORITY`` (the holder
    of the signing keys, which must be on this machine)."""
    signing_keys(settings)
    async with open_runtime(settings, identity=ROLE_AUTHORITY, prepare=True, pool_size=2) as rt:
        for role in await ensure_roles(rt, person, roles):
            console.print(f"granted {role} to user:{person}")


async def ensure_roles(rt: Runtime, person: str, roles: list[str], reason: str = "") -> list[str]:
    """Grant ``user:<person>`` those of ``roles`` it does not hold now, as ``ROLE_AUTHORITY``
    (``rt``'s settings must hold the signing keys). Returns the roles granted."""
    async with acting_as(rt, ROLE_AUTHORITY) as authority:
        return await FleetClient(authority.nc, ROLE_AUTHORITY).ensure_roles(person, roles, reason)


def _auth_arguments(auth: argparse.ArgumentParser) -> None:
    actions = auth.add_subparsers(dest="action", metavar="ACTION", required=True, help="what to do")
    actions.add_parser("init", help="create signing keys in FLEETWARD_AUTH_DIR (if missing)")
    service = actions.add_parser("service", help="issue a Fleetward service its credentials")
    service.add_argument("name", choices=SERVICES, help="the service: svc:<name> in its events")
    service.add_argument("--out", help="also write the credentials file here")
    no_arguments(
        actions.add_parser(
            "server-config", help="print the nats-server settings that trust these keys"
        )
    )


async def _auth(settings: Settings, args: argparse.Namespace) -> None:
    if args.action == "service":
        issue(settings, f"svc:{args.name}", args.out)
        return
    if args.action == "init":
        store = AuthStore(settings.auth_dir).init()
        path = store.root / "nats-auth.conf"
        path.write_text(store.server_config(Path("/var/lib/nats/accounts")))
        console.print(f"signing keys in {store.root} (keep this folder private)")
        console.print(
            f"  nats-server: add 'include {path}' to its configuration (deploy/nats/), "
            "then issue credentials: fleetward people add NAME, fleetward agents credentials ID"
        )
        return
    console.print(signing_keys(settings).server_config(Path("/var/lib/nats/accounts")), end="")


PEOPLE = Command(
    "people",
    "issue or revoke a person's credentials; grant and take roles",
    _people_arguments,
    _people,
)
AUTH = Command("auth", "Fleetward's signing keys, for your own NATS server", _auth_arguments, _auth)
