"""``fleetward api``: the HTTP API and dashboard as a service of its own (``svc:api`` reads the
views; each write is published as the person whose operator token asks, each ingress request as
the agent whose token it is), and ``fleetward api token``: a viewer or operator token for a
person, or an agent token for the HTTPS ingress."""

from __future__ import annotations

import argparse
import time

from fleetward.schemas.grants import API_SERVICE
from fleetward.services.api import token
from fleetward.services.auth.store import AuthStore
from fleetward.services.cli.command import Command, console
from fleetward.services.config import Settings
from fleetward.services.errors import FleetwardError
from fleetward.services.runtime.connect import open_runtime


def api_token(
    settings: Settings, person: str, expires_s: float = 0.0, role: token.Role = "viewer"
) -> str:
    """A token for ``person`` (``role``: viewer or operator), signed with the key in
    ``FLEETWARD_AUTH_DIR`` (made when missing). Raises ``FleetwardError`` for an identity that
    is not a person's."""
    try:
        return token.issue(
            token.load_key(settings.auth_dir, create=True), person, time.time(), expires_s, role
        )
    except token.BadToken as exc:
        raise FleetwardError(str(exc)) from None


def agent_token(settings: Settings, agent: str, expires_s: float = 0.0) -> str:
    """An agent token for ``agent`` (the HTTPS ingress publishes with it as that agent), signed
    with the key in ``FLEETWARD_AUTH_DIR``; the agent's NATS credentials, which the ingress
    acts with, are issued there too when it has none valid. Raises ``FleetwardError`` for an id
    that is not an agent's, or when that folder holds no signing keys."""
    store = AuthStore(settings.auth_dir)
    if not store.exists():
        raise FleetwardError(f"no signing keys in {settings.auth_dir}: run this where "
                             "Fleetward's auth folder is (FLEETWARD_AUTH_DIR)")  # fmt: skip
    try:
        issued = token.issue_agent(
            token.load_key(settings.auth_dir, create=True), agent, time.time(), expires_s
        )
    except token.BadToken as exc:
        raise FleetwardError(str(exc)) from None
    store.ensure(agent)
    return issued


def _arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", help="none: run the API")
    issue = sub.add_parser(
        "token", help="print a token for a person (dashboard, API) or an agent's (ingress)"
    )
    who = issue.add_mutually_exclusive_group(required=True)
    who.add_argument("--person", help="who it is for: user:NAME")
    who.add_argument("--agent", metavar="ID", help="an agent token for the HTTPS ingress")
    issue.add_argument(
        "--role", choices=token.ROLES, default="viewer",
        help="viewer reads; operator also writes, as the person, with the person's own roles",
    )  # fmt: skip
    issue.add_argument(
        "--expires", type=float, default=0.0, metavar="SECONDS", help="valid this long (0: no end)"
    )
    issue.add_argument(
        "--rotate-key",
        action="store_true",
        help="make a new signing key first: every token issued before fails (restart the API)",
    )


async def _api(settings: Settings, args: argparse.Namespace) -> None:
    if args.action == "token":
        if args.expires < 0:
            raise FleetwardError("--expires must be 0 (no end) or more seconds")
        if args.rotate_key:
            token.load_key(settings.auth_dir, rotate=True)
        if args.agent is not None:
            if args.role != "viewer":
                raise FleetwardError("--role is a person's: an agent's token has the role agent")
            console.print(agent_token(settings, args.agent, args.expires))
        else:
            console.print(api_token(settings, args.person, args.expires, args.role))
        return
    from fleetward.services.serve import run_services  # noqa: PLC0415  # only services need it

    async with open_runtime(settings, identity=API_SERVICE, prepare=False) as rt:
        api_ports: list[int] = []

        async def ready(port: int) -> None:
            console.print(
                f"api running on {settings.api_base(api_ports[0])}/ "
                f"(sign in: fleetward api token --person user:NAME); metrics on :{port}/metrics"
            )

        await run_services(rt, (), api=True, on_ready=ready, on_api=api_ports.append)


API = Command(
    "api",
    "run the HTTP API, live dashboard and agents' HTTPS ingress; 'api token' issues tokens",
    _arguments,
    _api,
)
