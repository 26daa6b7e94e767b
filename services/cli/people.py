"""Credentials from the command line: ``fleetward agents credentials|revoke ID``,
``fleetward people add|revoke NAME`` and ``fleetward auth init|server-config``.

Issuing needs Fleetward's signing keys (``FLEETWARD_AUTH_DIR``, by default
``$FLEETWARD_HOME/auth``; ``make run`` creates them); revoking also tells the running NATS server,
which closes the revoked identity's connections at once (services/auth/store.py)."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from fleetward.schemas.grants import API_SERVICE, SERVICE_ACTORS, identity_kind, inbox_prefix
from fleetward.services.auth.server import push_account
from fleetward.services.auth.store import AuthStore
from fleetward.services.cli.command import Command, console, no_arguments
from fleetward.services.config import Settings
from fleetward.services.errors import FleetwardError
from fleetward.services.runtime.connect import discover

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


def issue(settings: Settings, identity: str, out: str | None) -> Path:
    """Issue ``identity`` new credentials (copied to ``out`` when given) and say how to use them."""
    path = signing_keys(settings).issue(_identity(identity))
    if out:
        target = Path(out)
        shutil.copyfile(path, target)
        target.chmod(0o600)
        path = target
    console.print(f"credentials for {identity}: {path}")
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
    actions = people.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="issue a person credentials (a .creds file)")
    add.add_argument("name", help="the person's name: user:<name> in every event they publish")
    add.add_argument("--out", help="also write the credentials file here")
    gone = actions.add_parser("revoke", help="revoke every credential of a person, at once")
    gone.add_argument("name")


async def _people(settings: Settings, args: argparse.Namespace) -> None:
    identity = f"user:{args.name}"
    if args.action == "add":
        issue(settings, identity, args.out)
    else:
        await revoke(settings, identity)


def _auth_arguments(auth: argparse.ArgumentParser) -> None:
    actions = auth.add_subparsers(dest="action", metavar="ACTION", required=True)
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


PEOPLE = Command("people", "issue or revoke a person's credentials", _people_arguments, _people)
AUTH = Command("auth", "Fleetward's signing keys, for your own NATS server", _auth_arguments, _auth)
