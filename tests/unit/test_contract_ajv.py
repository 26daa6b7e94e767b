"""The generated JSON Schemas as another language reads them: ajv, the JavaScript validator, in
strict mode (``tests/ajv/check.mjs``; pinned in ``tests/ajv/package.json``, installed by
``make test``). One node process compiles every schema and runs every case below.

Run from ``make test`` (``FLEETWARD_REQUIRE_AJV=1``) these tests fail when node or ajv is
missing; run by hand without them, they are skipped with the command that installs them.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import msgspec
import pytest

from fleetward.schemas import contract
from fleetward.schemas.events import EVENT_TYPES, Event, type_name
from tests.samples import sample_events
from tests.samples_api import sample_api

ROOT = Path(__file__).resolve().parents[2]
AJV_DIR = ROOT / "tests" / "ajv"
SCHEMAS = ROOT / "schemas" / "jsonschema"
REQUIRED = os.environ.get("FLEETWARD_REQUIRE_AJV") == "1"
SAMPLES = sample_events()
MAX_ERRORS = 2  # the bad field's error, and the `if` of its type saying its `then` failed


def _payload(message: msgspec.Struct) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(msgspec.json.encode(message))
    return payload


def _bad(event: Event) -> dict[str, Any]:
    """The event with a number where its subject key (a string every type has) belongs."""
    return {**_payload(event), type(event).SUBJECT_KEY: 42}


def _cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []
    for event in SAMPLES:
        name = type_name(type(event))
        for schema in (name, "event"):
            cases.append({"name": f"good {name} {schema}", "schema": schema,
                          "instance": _payload(event)})  # fmt: skip
            cases.append({"name": f"bad {name} {schema}", "schema": schema,
                          "instance": _bad(event)})  # fmt: skip
    unknown = {**_payload(SAMPLES[0]), "type": "agent.exploded"}
    cases.append({"name": "unknown type", "schema": "event", "instance": unknown})
    for i, (schema, message) in enumerate(sample_api()):
        cases.append({"name": f"good {schema} {i}", "schema": schema,
                      "instance": _payload(message)})  # fmt: skip
    cases.append({"name": "bad api request", "schema": "api/agents.get.request",
                  "instance": {"agent": 42}})  # fmt: skip
    cases.append({"name": "bad api reply", "schema": "api/tasks.claimable.reply",
                  "instance": {"tasks": ["task 42"]}})  # fmt: skip
    return cases


def _unavailable(why: str) -> None:
    message = f"{why}: `make test` installs it (npm ci --prefix tests/ajv), node 18+ needed"
    if REQUIRED:
        pytest.fail(message)
    pytest.skip(message)


@functools.cache
def _run() -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        _unavailable("node is not installed")
    if not (AJV_DIR / "node_modules" / "ajv" / "package.json").is_file():
        _unavailable("ajv is not installed in tests/ajv/node_modules")
    job = json.dumps({"root": str(SCHEMAS), "cases": _cases()})
    done = subprocess.run(
        [str(node), str(AJV_DIR / "check.mjs")],
        input=job, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


@pytest.fixture(scope="module")
def ajv() -> dict[str, Any]:
    return _run()


@pytest.fixture(scope="module")
def results(ajv: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in ajv["results"]}


def test_ajv_is_the_pinned_version(ajv: dict[str, Any]) -> None:
    pinned = json.loads((AJV_DIR / "package.json").read_text())["dependencies"]["ajv"]
    assert ajv["ajv"] == pinned


def test_every_schema_compiles_in_strict_mode(ajv: dict[str, Any]) -> None:
    assert ajv["failed"] == {}
    assert ajv["warnings"] == []
    expected = {rel.removeprefix("jsonschema/").removesuffix(".json") for rel in contract.render()}
    expected -= {"asyncapi", "openapi"}  # documents of their own, not JSON Schemas
    assert set(ajv["compiled"]) == expected


@pytest.mark.parametrize("event", SAMPLES, ids=[type_name(type(e)) for e in SAMPLES])
def test_sample_event_is_valid(event: Event, results: dict[str, dict[str, Any]]) -> None:
    name = type_name(type(event))
    for schema in (name, "event"):
        result = results[f"good {name} {schema}"]
        assert (result["valid"], result["errors"]) == (True, []), schema


@pytest.mark.parametrize("event", SAMPLES, ids=[type_name(type(e)) for e in SAMPLES])
def test_bad_event_gets_only_the_errors_of_its_type(
    event: Event, results: dict[str, dict[str, Any]]
) -> None:
    cls = type(event)
    name, key = type_name(cls), cls.SUBJECT_KEY
    own = results[f"bad {name} {name}"]
    assert own["valid"] is False
    assert [(e["instancePath"], e["keyword"]) for e in own["errors"]] == [(f"/{key}", "type")]

    union = results[f"bad {name} event"]
    assert union["valid"] is False
    errors = union["errors"]
    assert 1 <= len(errors) <= MAX_ERRORS, errors
    # the field's error, and the union's branch of this type (and no other) saying it failed
    branches = [e["schemaPath"] for e in errors if e["keyword"] == "if"]
    assert branches == [f"#/allOf/{EVENT_TYPES.index(cls)}/if"]
    fields = [(e["instancePath"], e["keyword"]) for e in errors if e["keyword"] != "if"]
    assert fields == [(f"/{key}", "type")]


def test_unknown_type_gets_one_error(results: dict[str, dict[str, Any]]) -> None:
    errors = results["unknown type"]["errors"]
    assert [(e["instancePath"], e["keyword"]) for e in errors] == [("/type", "enum")]


def test_api_samples_are_valid_and_bad_ones_are_not(results: dict[str, dict[str, Any]]) -> None:
    for i, (schema, _) in enumerate(sample_api()):
        result = results[f"good {schema} {i}"]
        assert (result["valid"], result["errors"]) == (True, []), schema
    request = results["bad api request"]["errors"]
    assert [(e["instancePath"], e["keyword"]) for e in request] == [("/agent", "type")]
    reply = results["bad api reply"]["errors"]
    assert [(e["instancePath"], e["keyword"]) for e in reply] == [("/tasks/0", "pattern")]
