"""Event ids: UUIDv7, so ids sort by creation time. Deterministic ids (for events two replicas
may both publish) are UUIDv5 of a name, so both publish the same Nats-Msg-Id."""

from __future__ import annotations

import uuid

import uuid_utils

_NAMESPACE = uuid.UUID("5b0f3d2e-7c1a-4f7e-9a43-6b1f0e5d2c11")


def new_id() -> str:
    return str(uuid_utils.uuid7())


def deterministic_id(*parts: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, "/".join(parts)))


def policy_id(scope: str, scope_id: str) -> str:
    """The one tool policy of a scope (``agent``, ``team`` or ``risk``) and its id (an agent id,
    a team, a risk class): ``<scope>-<20 hex digits>``, the key of its subjects
    (``fw.policy.<id>.<actor>``). Anyone can compute it, so an agent finds the policies that
    cover it by their ids (schemas/policies.py)."""
    return f"{scope}-{deterministic_id('policy', scope, scope_id).replace('-', '')[:20]}"
