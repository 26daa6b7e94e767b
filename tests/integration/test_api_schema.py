"""Every route of the OpenAPI document against the live app (issue 17): schemathesis generates
requests from ``schemas/openapi.json`` (valid ones, and ones that break it), sends them with an
operator's token to a running Fleetward (real nats-server and Postgres, ``api_harness``), and
checks each answer: never a 5xx, a status the document declares, its media type and its JSON
schema. Invalid input must get a 4xx.

Bounded: ``EXAMPLES`` requests per route and mode. The live stream (``/api/v1/events``) is left
out: its answer never ends (the browser test reads it); so is the ingress's inbox, whose ``wait``
would hold cases up to 10 s each (tests/integration/test_ingress.py reads it). The ingress's
routes are sent with an agent's token (the only one they take). schemathesis sends with
``requests``, which blocks, so it runs in a worker thread while the app serves in the test's
event loop."""

from __future__ import annotations

import time

import anyio
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.schemas import APIOperation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from fleetward.schemas.http import EVENTS_PATH
from fleetward.schemas.ingress import INGRESS_ROOT
from fleetward.schemas.openapi import openapi
from fleetward.services.api import token
from fleetward.services.jetstream.publish import publish_many
from fleetward.services.runtime.connect import Runtime
from tests.helpers import creds
from tests.integration.api_harness import running_api, token_of
from tests.integration.test_watchdog import escalation, register

EXAMPLES = 3  # per route and generation mode
INBOX = f"{INGRESS_ROOT}/inbox"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]  # fmt: skip


def _run(operation: APIOperation, mode: GenerationMode, base: str, bearer: str) -> None:
    """``EXAMPLES`` cases of ``operation`` in ``mode``, each sent and checked."""
    checks = CHECKS + ([negative_data_rejection] if mode.is_negative else [])
    auth = {"authorization": f"Bearer {bearer}"}

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))  # fmt: skip
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(base_url=base, headers=auth, checks=checks, timeout=20)

    run()


def fuzz(base: str, bearer: str, agent_bearer: str) -> list[str]:
    """Each route's failures (empty: none), after ``EXAMPLES`` cases per mode; the ingress's
    routes with an agent's token (``agent_bearer``), the others with ``bearer``."""
    failures: list[str] = []
    for result in schemathesis.openapi.from_dict(openapi()).get_all_operations():
        operation = result.ok()
        if operation.path in (EVENTS_PATH, INBOX):
            continue
        ingress = operation.path.startswith(INGRESS_ROOT)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _run(operation, mode, base, agent_bearer if ingress else bearer)
            except (Exception, BaseExceptionGroup) as exc:  # every route is tried
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    return failures


@pytest.mark.slow
async def test_every_route_answers_per_its_openapi_document(rt: Runtime) -> None:
    await publish_many(rt.js, [register("w-1", 3600.0), escalation("esc-1", "warning", "w-1")])
    creds(rt, "user:ops")  # the operator acts with their own credentials
    async with running_api(rt) as api:
        bearer = token_of(api, "user:ops")
        creds(rt, "fuzz-agent")  # the ingress acts as the agent with its own credentials
        agent_bearer = token.issue_agent(api.key, "fuzz-agent", time.time())
        failures = await anyio.to_thread.run_sync(fuzz, api.base, bearer, agent_bearer)
    assert failures == [], "\n".join(failures)
