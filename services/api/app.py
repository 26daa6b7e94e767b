"""The HTTP API and the dashboard as one Starlette app: the routes of ``schemas/http.py`` (JSON),
the live stream (``services/api/live.py``), the dashboard's pages and /healthz.

Invariants: every route but /login, /healthz, /readyz, /livez and the static files needs a valid
token (``Authorization: Bearer`` or the ``fw_token`` cookie that /login sets); query
parameters are checked before any read (400 with a reason); the write routes need an operator's
token and publish as its person (``services/api/write.py``); the ingress
(``/api/v1/ingress``) takes only an agent's token and publishes as that agent
(``services/api/ingress.py``), whose token no other route takes; every refusal, unknown paths
and methods included, is JSON ``{"error": ...}``.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from importlib import resources
from typing import Any, Final

import anyio
import asyncpg
import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route as StarletteRoute

from fleetward.schemas import http
from fleetward.schemas.admission import nul_at
from fleetward.schemas.openapi import openapi
from fleetward.services.api import reads
from fleetward.services.api.live import Live, sse
from fleetward.services.api.token import BadToken, Claims, verify
from fleetward.services.api.write import People, Refused, read_body, write
from fleetward.services.db import Conn
from fleetward.services.metrics.health import HealthChecks

COOKIE: Final = "fw_token"
PING_S: Final = 15.0  # a comment on an idle event stream, so proxies keep it open
SECURITY_HEADERS: Final = {
    "content-security-policy": "default-src 'self'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}
STATIC: Final = {  # file -> media type
    "dashboard.html": "text/html; charset=utf-8",
    "login.html": "text/html; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "login.js": "text/javascript; charset=utf-8",
    "chart.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}

Handler = Callable[[Any, Any, dict[str, str]], Awaitable[msgspec.Struct | None]]


def _json(value: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(value), status, media_type="application/json")


def _error(status: int, why: str) -> Response:
    return _json(http.Error(why), status)


def _static(name: str) -> Response:
    body = resources.files("fleetward.services.api").joinpath("static", name).read_bytes()
    return Response(body, media_type=STATIC[name], headers=SECURITY_HEADERS)


async def _overview(live: Live, conn: Conn) -> http.Overview:
    """The overview the live poller read last when fresh (services/api/live.py), else read now."""
    answer = live.overview()
    if answer is None:
        answer = await reads.overview(conn)
        live.keep(answer)
    return answer


def _handlers(now: Callable[[], float], live: Live) -> dict[str, Handler]:
    """Each route's read: (connection, query, path parameters) -> its answer (None: 404)."""
    return {
        "overview": lambda c, _q, _p: _overview(live, c),
        "agents": lambda c, query, _p: reads.agents(c, query),
        "agent": lambda c, _q, p: reads.agent(c, p["agent_id"]),
        "agent_events": lambda c, query, p: reads.agent_events(c, p["agent_id"], query),
        "tasks": lambda c, query, _p: reads.tasks(c, query),
        "task": lambda c, _q, p: reads.task(c, p["task_id"]),
        "spend": lambda c, query, _p: reads.spend(c, query, datetime.fromtimestamp(now(), UTC)),
        "escalations": lambda c, query, _p: reads.escalations(c, query),
        "dead_letters": lambda c, query, _p: reads.dead_letters(c, query),
        "budgets": lambda c, query, _p: reads.budgets(c, query),
    }


class Gate:
    """Who asks: the viewer token of a request, verified."""

    def __init__(
        self,
        key: bytes,
        now: Callable[[], float],
        revoked_at: Callable[[str], int | None] = lambda _identity: None,
    ) -> None:
        self.key, self.now, self.revoked_at = key, now, revoked_at

    def claims(self, request: Request) -> Claims | Response:
        """The verified claims of a person's token, or the 401/403 answer saying why not (an
        agent's token serves only the ingress, services/api/ingress.py)."""
        who = self.verified(request)
        if isinstance(who, Claims) and who.role == "agent":
            return _error(403, "an agent's token serves only /api/v1/ingress: reads need a "
                          "person's (fleetward api token --person user:NAME)")  # fmt: skip
        return who

    def verified(self, request: Request, *, cookie: bool = True) -> Claims | Response:
        """The request's verified claims, whatever the role, or the 401 answer saying why not;
        the session cookie counts only with ``cookie``."""
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else None
        token = token or (request.cookies.get(COOKIE) if cookie else None)
        if not token:
            return _error(401, "sign in: send a token (fleetward api token) as "
                          "'Authorization: Bearer TOKEN'")  # fmt: skip
        try:
            claims = verify(self.key, token, self.now())
            revoked = self.revoked_at(claims.sub)
            if revoked is not None and claims.iat < revoked:  # a token outlives no revocation
                raise BadToken(f"{claims.sub}'s credentials were revoked after this token was "
                               "issued: issue a new one (fleetward api token)")  # fmt: skip
            return claims
        except BadToken as exc:
            return _error(401, str(exc))


def _read(
    route: http.Route, gate: Gate, pool: asyncpg.Pool, handler: Handler | None
) -> Callable[[Request], Awaitable[Response]]:
    """The endpoint of one read route."""

    async def endpoint(request: Request) -> Response:
        who = gate.claims(request)
        if isinstance(who, Response):
            return who
        if handler is None:  # whoami
            exp = datetime.fromtimestamp(who.exp, UTC) if who.exp else None
            return _json(http.Whoami(person=who.sub, role=who.role, expires_at=exp))
        if (unknown := no_such_id(request)) is not None:
            return unknown
        given = dict(request.query_params)
        try:
            query = msgspec.convert(given, route.query, strict=False)
        except msgspec.ValidationError as exc:
            return _error(400, f"bad query: {exc}")
        nulls = [name for name in given if getattr(query, name, "") is None]
        if nulls:  # lax conversion reads "null" as None: a query string cannot say null
            return _error(400, f"bad query: {nulls[0]}=null is no value of it (leave it out)")
        if where := nul_at(query):  # Postgres text cannot hold it
            return _error(400, f"bad query: Expected text without NUL (U+0000) - at `{where}`")
        try:
            async with pool.acquire() as conn:
                answer = await handler(conn, query, request.path_params)
        except (OSError, asyncpg.PostgresConnectionError) as exc:
            return _error(503, f"cannot read the views: {exc}")
        if answer is None:
            return _error(404, f"no {route.name} {next(iter(request.path_params.values()))}")
        return _json(answer)

    return endpoint


ID: Final = re.compile(http.ID_PATTERN)


def no_such_id(request: Request) -> Response | None:
    """The 404 answer when an id in the path cannot be an id of the contract (``ID_PATTERN``:
    no NUL, no subject wildcard or separator), before anything reads it; else None."""
    for name, value in request.path_params.items():
        if not ID.match(value):
            return _error(404, f"no {name.removesuffix('_id')} {value[:80]!r}: ids are 1 to 64 "
                          "of A-Z a-z 0-9 _ -")  # fmt: skip
    return None


def _write(
    route: http.WriteRoute, gate: Gate, people: People
) -> Callable[[Request], Awaitable[Response]]:
    """The endpoint of one write route: an operator's token, ids that can exist, the body,
    then the write as the token's person."""

    async def endpoint(request: Request) -> Response:
        who = gate.claims(request)
        if isinstance(who, Response):
            return who
        if who.role != "operator":
            return _error(403, f"{who.sub}'s token is a {who.role}'s: writes need an operator's "
                          f"(fleetward api token --person {who.sub} --role operator)")  # fmt: skip
        if (unknown := no_such_id(request)) is not None:
            return unknown
        params = dict(request.path_params)
        try:
            body = await read_body(request, route)
            return _json(await write(people, who.sub, route, body, params))
        except Refused as exc:
            return _error(exc.status, str(exc))

    return endpoint


def _events(gate: Gate, live: Live) -> Callable[[Request], Awaitable[Response]]:
    """The live stream's endpoint: ``ready`` once subscribed, then every change from the
    subscription on, pings when idle. A client reads the routes after ``ready``: what it reads
    then cannot miss a change (one committed before is in the reading, one after is sent)."""

    async def events(request: Request) -> Response:
        who = gate.claims(request)
        if isinstance(who, Response):
            return who

        async def stream() -> AsyncIterator[bytes]:
            async with live.subscribe() as changes:  # subscribed and a baseline: "ready" is true
                await live.baseline()
                yield b"retry: 2000\n\n" + sse("ready", b"{}")
                while not who.exp or gate.now() < who.exp:  # ends with its token
                    wait = PING_S if not who.exp else min(PING_S, who.exp - gate.now())
                    with anyio.move_on_after(wait) as idle:
                        try:
                            name, data = await changes.receive()
                        except anyio.EndOfStream:
                            return
                    yield b": ping\n\n" if idle.cancelled_caught else sse(name, data)

        headers = {"cache-control": "no-store", "x-accel-buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    return events


def _pages(gate: Gate, health: HealthChecks) -> list[StarletteRoute]:
    """The dashboard, sign-in and out, health, the OpenAPI document and the static files."""
    document = msgspec.json.encode(openapi())

    async def dashboard(request: Request) -> Response:
        if isinstance(gate.claims(request), Response):
            return RedirectResponse("/login", 303)
        return _static("dashboard.html")

    async def login(request: Request) -> Response:
        if request.method == "GET":
            return _static("login.html")
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            # a cross-site form cannot send JSON: no signing a browser in as someone else
            return _error(415, 'send {"token": "..."} as application/json')
        try:
            token = msgspec.json.decode(await request.body(), type=dict[str, str])["token"]
            claims = verify(gate.key, token, gate.now())
        except (msgspec.DecodeError, msgspec.ValidationError, KeyError):
            return _error(400, 'send {"token": "..."}')
        except BadToken as exc:
            return _error(401, str(exc))
        if claims.role == "agent":
            return _error(403, "an agent's token signs no one in: the dashboard is for people "
                          "(fleetward api token --person user:NAME)")  # fmt: skip
        expires = datetime.fromtimestamp(claims.exp, UTC) if claims.exp else None
        response = _json(http.Whoami(person=claims.sub, role=claims.role, expires_at=expires))
        max_age = max(int(claims.exp - gate.now()), 1) if claims.exp else None
        response.set_cookie(COOKIE, token, max_age=max_age, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https", path="/")  # fmt: skip
        return response

    async def logout(_request: Request) -> Response:
        response = RedirectResponse("/login", 303)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response

    async def healthz(_request: Request) -> Response:
        report = health.report()
        return Response(report.json(), 200 if report.ok else 503, media_type="application/json")

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        return _static(name) if name in STATIC else _error(404, f"no file {name}")

    async def spec(_request: Request) -> Response:
        return Response(document, media_type="application/json")

    return [
        StarletteRoute("/", dashboard, methods=["GET"]),
        StarletteRoute("/login", login, methods=["GET", "POST"]),
        StarletteRoute("/logout", logout, methods=["POST"]),
        StarletteRoute("/healthz", healthz, methods=["GET"]),
        StarletteRoute("/readyz", healthz, methods=["GET"]),
        StarletteRoute("/openapi.json", spec, methods=["GET"]),
        StarletteRoute("/static/{name}", static, methods=["GET"]),
        StarletteRoute("/favicon.ico", lambda _r: Response(status_code=204), methods=["GET"]),
    ]


async def _http_error(_request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such path, a method the path does not take) as JSON."""
    assert isinstance(exc, HTTPException)
    return _json(http.Error(exc.detail), exc.status_code)


def make_app(
    pool: asyncpg.Pool,
    key: bytes,
    live: Live,
    health: HealthChecks,
    people: People,
    *,
    now: Callable[[], float] = time.time,
    more: Callable[[Gate], list[StarletteRoute]] | None = None,
) -> Starlette:
    """The app, reading from ``pool``, verifying tokens with ``key``, writing as people through
    ``people``'s connections; ``more`` adds the routes it makes with the app's ``Gate`` (the
    ingress: services/api/ingress.py)."""
    gate, handlers = Gate(key, now, people.revoked_at), _handlers(now, live)
    routes = [
        StarletteRoute(r.path, _read(r, gate, pool, handlers.get(r.name)), methods=["GET"])
        for r in http.ROUTES
    ]
    routes += [
        StarletteRoute(w.path, _write(w, gate, people), methods=["POST"]) for w in http.WRITE_ROUTES
    ]
    routes.append(StarletteRoute(http.EVENTS_PATH, _events(gate, live), methods=["GET"]))
    routes += more(gate) if more is not None else []
    return Starlette(
        routes=routes + _pages(gate, health), exception_handlers={HTTPException: _http_error}
    )
