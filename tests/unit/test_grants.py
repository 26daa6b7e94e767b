"""The permissions of each identity (schemas/grants.py): every subject an identity may publish
an event on carries that identity (DESIGN 3.7), and nobody may delete or purge streams."""

from __future__ import annotations

import pytest

from fleetward.schemas.grants import (
    ACTOR_KINDS,
    AGENT_APIS,
    SERVICE_ACTORS,
    grants_for,
    identity_kind,
    inbox_prefix,
    is_inbox,
    registry_commands,
)
from fleetward.schemas.subjects import API_BUDGETS_RESERVE

IDENTITIES = ("a-17", "agent_9", "user:alice", "user:bob@example", "svc:projector", "svc:watchdog",
              "svc:api", "svc:qa")  # fmt: skip


def event_subjects(patterns: tuple[str, ...]) -> list[str]:
    """The patterns that are Fleetward event subjects (not JetStream's API or fw.api)."""
    return [p for p in patterns if p.startswith("fw.") and not p.startswith("fw.api.")]


@pytest.mark.parametrize("identity", IDENTITIES)
def test_every_event_subject_an_identity_may_publish_carries_it(identity: str) -> None:
    grants = grants_for(identity)
    speaks_as = SERVICE_ACTORS.get(identity, (identity,))
    for pattern in event_subjects(grants.publish):
        kind, last = pattern.split(".")[1], pattern.split(".")[-1]
        assert last in speaks_as, pattern  # the actor token: its own, never a wildcard
        assert "*" not in last and ">" not in last
        if kind == "hb":
            assert identity_kind(identity) == "agent" and pattern == f"fw.hb.{identity}"
        else:
            assert pattern.split(".")[1] in ACTOR_KINDS


@pytest.mark.parametrize("identity", IDENTITIES)
def test_an_identity_reads_replies_only_on_its_own_inbox(identity: str) -> None:
    grants = grants_for(identity)
    own = f"{inbox_prefix(identity)}.>"
    assert own in grants.subscribe
    # besides: an agent follows the registry's commands to itself (every process of it)
    theirs = (registry_commands(identity),) if identity_kind(identity) == "agent" else ()
    assert all(s in (own, "fw.api.>", *theirs) for s in grants.subscribe), grants.subscribe
    assert not any(p.startswith("_INBOX") for p in grants.publish)


def test_an_agent_reaches_its_own_inbox_and_the_agent_apis_only() -> None:
    grants = grants_for("a-1")
    js = [p for p in grants.publish if p.startswith("$JS.")]
    assert js == [
        "$JS.API.STREAM.MSG.GET.FW_EVENTS",
        "$JS.API.CONSUMER.CREATE.FW_COMMANDS.inbox_a-1.fw.cmd.a-1.>",
        "$JS.API.CONSUMER.INFO.FW_COMMANDS.inbox_a-1",
        "$JS.API.CONSUMER.MSG.NEXT.FW_COMMANDS.inbox_a-1",
        "$JS.ACK.FW_COMMANDS.inbox_a-1.>",
    ]
    assert [p for p in grants.publish if p.startswith("fw.api.")] == [
        *AGENT_APIS,
        "fw.api.budgets.reserve.a-1",
        "fw.api.budgets.release.a-1",
    ]  # the budget APIs only on its own subjects: the subject proves who asks
    assert not grants.respond


def test_nobody_but_the_agent_asks_the_budget_apis_in_its_name() -> None:
    person = grants_for("user:alice")
    assert "fw.api.budgets.reserve.>" in person.deny_publish
    assert "fw.api.budgets.release.>" in person.deny_publish
    other = grants_for("a-2").publish
    assert "fw.api.budgets.reserve.a-1" not in other and "fw.api.budgets.reserve.*" not in other


@pytest.mark.parametrize("identity", ["svc:projector", "svc:watchdog"])
def test_services_may_not_delete_or_purge(identity: str) -> None:
    deny = grants_for(identity).deny_publish
    assert "$JS.API.STREAM.DELETE.>" in deny and "$JS.API.STREAM.PURGE.>" in deny
    assert "$JS.API.STREAM.MSG.DELETE.>" in deny


def test_the_task_api_publishes_nothing_and_answers_requests() -> None:
    grants = grants_for("svc:api")
    assert grants.publish == () and grants.respond and "fw.api.>" in grants.subscribe


def test_the_guard_answers_reservations_in_its_queue_group_and_agents_may_ask() -> None:
    guard = grants_for("svc:guard")
    assert guard.respond and f"{API_BUDGETS_RESERVE}.*" in guard.subscribe
    assert "fw.api.>" not in guard.subscribe  # only its own endpoints
    assert f"{API_BUDGETS_RESERVE}.a-1" in grants_for("a-1").publish
    assert not grants_for("svc:watchdog").respond


@pytest.mark.parametrize(
    "bad", ["", "user:", "user:a.b", "svc:x y", "a.b", "a" * 65, "user:" + "a" * 65, "root:x", ">"]
)
def test_what_is_not_an_identity_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not an identity"):
        grants_for(bad)


@pytest.mark.parametrize("identity", ["a-1", "user:alice", "svc:api"])
def test_no_agent_person_or_responder_may_make_a_direct_get(identity: str) -> None:
    """A direct get answers with a stored message's bytes on any reply subject the requester
    names, which a stream may store (docs/identity.md, "Answers are a write path")."""
    assert not any("DIRECT" in p or p.startswith("$JS.API.>") for p in grants_for(identity).publish)


def test_services_answer_only_on_inboxes() -> None:
    assert is_inbox("_INBOX.x.y") and is_inbox(f"{inbox_prefix('a-1')}.z")
    for subject in ("fw.task.t.svc:api", "fw.cmd.a-1.svc:api", "$JS.API.STREAM.CREATE.X", "x"):
        assert not is_inbox(subject), subject


def test_an_agent_follows_only_the_registrys_commands_to_itself() -> None:
    assert grants_for("a-1").subscribe == ("_INBOX_a-1.>", "fw.cmd.a-1.svc:registry")
