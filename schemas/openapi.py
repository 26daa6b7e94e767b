"""The HTTP API as OpenAPI 3.1 (``schemas/openapi.json``), generated from ``schemas/http.py``.
Pure; written and checked for drift with the rest of the contract (``make schemas``,
``schemas/contract.py``)."""

from __future__ import annotations

from typing import Any, Final

import msgspec

from fleetward.schemas.http import (
    API_VERSION,
    EVENTS_PATH,
    ID_PATTERN,
    LIVE_EVENTS,
    MAX_BODY,
    ROUTES,
    WRITE_ROUTES,
    Error,
    Route,
    WriteRoute,
    Written,
)
from fleetward.schemas.ingress import INGRESS_ROUTES, IngressRoute

JSONDict = dict[str, Any]
REF: Final = "#/components/schemas/{name}"
BEARER: Final = "apiToken"
AGENT_BEARER: Final = "agentToken"


def _parameters(route: Route) -> list[JSONDict]:
    params: list[JSONDict] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in route.path_params
    ]
    schema = msgspec.json.schema(route.query)
    body = schema["$defs"][schema["$ref"].rsplit("/", 1)[1]]
    for name, prop in body.get("properties", {}).items():
        params.append({"name": name, "in": "query", "required": False, "schema": _given(prop)})
    return params


def _given(prop: JSONDict) -> JSONDict:
    """A query parameter's schema when it is given: a query string cannot say null, so an
    optional parameter's ``anyOf [T, null]`` is ``T`` (absent means "no filter")."""
    variants = [v for v in prop.get("anyOf", []) if v != {"type": "null"}]
    if len(variants) != 1:
        return prop
    return {**variants[0], **{k: v for k, v in prop.items() if k not in ("anyOf", "default")}}


def _json(ref: str, description: str) -> JSONDict:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": ref}}}}


def _operation(route: Route) -> JSONDict:
    error = REF.format(name="Error")
    responses: JSONDict = {
        "200": _json(REF.format(name=route.answer.__name__), "the answer"),
        "400": _json(error, "an unknown query parameter, or a value out of its type or bounds"),
        "401": _json(error, "no token, or one that is not valid (bad signature, expired)"),
        "503": _json(error, "Postgres cannot be reached"),
    }
    if route.not_found:
        responses["404"] = _json(error, "no such id")
    return {
        "operationId": route.name,
        "summary": route.summary,
        "parameters": _parameters(route),
        "responses": responses,
    }


def _path_id(name: str) -> JSONDict:
    return {"name": name, "in": "path", "required": True,
            "schema": {"type": "string", "pattern": ID_PATTERN}}  # fmt: skip


def _write(route: WriteRoute) -> JSONDict:
    """A write route's POST: its body, its answers (the refusals' statuses:
    services/api/write.py)."""
    error = REF.format(name="Error")
    body = REF.format(name=route.body.__name__)
    responses: JSONDict = {
        "200": _json(REF.format(name=Written.__name__), "published: the event and its id"),
        "400": _json(error, "a body that is not JSON, has an unknown field, or a value out of "
                     "its type or the contract's bounds"),
        "401": _json(error, "no token, or one that is not valid (bad signature, expired)"),
        "403": _json(error, "a viewer's token, or a person who lacks the role for the action "
                     "or whose NATS credentials are missing, revoked or expired"),
        "409": _json(error, "the state does not allow it (a task held, done or cancelled; an "
                     "id taken; an agent already paused): the CLI's one-line reason"),
        "413": _json(error, f"a body over {MAX_BODY} bytes"),
        "415": _json(error, "a body that is not application/json"),
        "503": _json(error, "NATS or the task API cannot be reached"),
    }  # fmt: skip
    if route.path_params:
        responses["404"] = _json(error, "no such task, agent or escalation")
    return {
        "operationId": route.name,
        "summary": route.summary,
        "parameters": [_path_id(name) for name in route.path_params],
        "requestBody": {
            "required": route.body_required,
            "content": {"application/json": {"schema": {"$ref": body}}},
        },
        "responses": dict(sorted(responses.items())),
    }


def _events() -> JSONDict:
    lines = "\n".join(f"- `{name}`: {what}" for name, what in LIVE_EVENTS.items())
    return {
        "operationId": "events",
        "summary": "Changes as they reach the views, as server-sent events",
        "description": "A `text/event-stream`; each event's `data` is one JSON object:\n" + lines,
        "parameters": [],
        "responses": {
            "200": {
                "description": "the stream, until the client goes away",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            "401": _json(REF.format(name="Error"), "no token, or one that is not valid"),
        },
    }


def _ingress_operation(route: IngressRoute) -> JSONDict:
    """One ingress route: its body (POST) or query (GET), its answers, the agent token."""
    error = REF.format(name="Error")
    refusals = {
        "400": "a body or query that is not its shape, or an event the contract refuses "
        "(msgspec's or admission's reason)",
        "401": "no token, or one that is not valid (bad signature, expired)",
        "403": "not an agent token, an event naming another agent, or the agent's NATS "
        "credentials revoked or missing",
        "503": "NATS (or the task API) cannot be reached",
    }
    if route.method == "post":
        refusals["413"] = "a body larger than the largest event"
    if route.conflict:
        refusals["409"] = (
            "the compare-and-set was lost, or the task is no longer the agent's (the reason, "
            "as the agent SDK raises it)"
        )
    if "{task_id}" in route.path:
        refusals["404"] = "a task id that cannot be an id (refused before anything reads it)"
    responses: JSONDict = {"200": _json(REF.format(name=route.answer.__name__), "the answer")}
    responses |= {status: _json(error, why) for status, why in sorted(refusals.items())}
    operation: JSONDict = {
        "operationId": route.name,
        "summary": route.summary,
        "parameters": [_path_id("task_id")] if "{task_id}" in route.path else [],
        "responses": responses,
        "security": [{AGENT_BEARER: []}],
    }  # fmt: skip
    if route.method == "get":
        operation["parameters"] += _parameters(
            Route(route.name, route.path, route.summary, route.body, route.answer)
        )
    else:
        ref = {"$ref": REF.format(name=route.body.__name__)}
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": ref}},
        }
    return operation


def openapi() -> JSONDict:
    """The OpenAPI 3.1 document of every route."""
    bodies = {r.body for r in WRITE_ROUTES} | {Written}
    bodies |= {r.body for r in INGRESS_ROUTES if r.method == "post"}
    answers = {r.answer for r in ROUTES} | {r.answer for r in INGRESS_ROUTES}
    types = sorted(answers | bodies | {Error}, key=lambda t: t.__name__)
    _, components = msgspec.json.schema_components(types, ref_template=REF)
    paths: JSONDict = {r.path: {"get": _operation(r)} for r in ROUTES}
    paths[EVENTS_PATH] = {"get": _events()}
    for w in WRITE_ROUTES:
        paths.setdefault(w.path, {})["post"] = _write(w)
    for ingress in INGRESS_ROUTES:
        paths.setdefault(ingress.path, {})[ingress.method] = _ingress_operation(ingress)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Fleetward HTTP API",
            "version": API_VERSION,
            "description": "Reads of the public views (docs/views.md) for dashboards and "
            "scripts, and the operator's actions of the CLI; a token (`fleetward api token "
            "--person user:NAME [--role operator]`) as `Authorization: Bearer` or the "
            "dashboard's session cookie. A viewer's token reads; an operator's also writes, "
            "each write published as its person, judged by that person's own roles. Under "
            "/api/v1/ingress, agents that cannot speak NATS publish as themselves with an agent "
            "token (`fleetward api token --agent ID`; docs/agents.md, Agents over HTTPS).",
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": components,
            "securitySchemes": {
                BEARER: {"type": "http", "scheme": "bearer"},
                AGENT_BEARER: {"type": "http", "scheme": "bearer"},
            },
        },
        "security": [{BEARER: []}],
    }
