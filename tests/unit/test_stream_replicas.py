"""The replica count of the streams (FLEETWARD_STREAM_REPLICAS): read, created with, verified."""

from __future__ import annotations

import pytest

from fleetward.schemas.streams import events_stream
from fleetward.services.config import Settings
from fleetward.services.errors import FleetwardError
from fleetward.services.jetstream.connection import server_list
from fleetward.services.jetstream.streams import conflicts, to_config


def test_unset_means_one_on_creation_and_no_check() -> None:
    assert Settings.from_env({}).stream_replicas is None
    assert Settings.from_env({"FLEETWARD_STREAM_REPLICAS": " "}).stream_replicas is None
    assert to_config(events_stream()).num_replicas == 1


@pytest.mark.parametrize("raw", ["0", "6", "-1", "3.0", "three"])
def test_a_count_outside_one_to_five_is_refused_by_name(raw: str) -> None:
    with pytest.raises(FleetwardError, match="FLEETWARD_STREAM_REPLICAS"):
        Settings.from_env({"FLEETWARD_STREAM_REPLICAS": raw})


def test_a_stream_of_another_count_conflicts_only_when_a_count_is_asked_for() -> None:
    spec = events_stream()
    assert Settings.from_env({"FLEETWARD_STREAM_REPLICAS": "3"}).stream_replicas == 3
    found = to_config(spec, 3)
    assert found.num_replicas == 3
    assert conflicts(spec, found) == []
    assert conflicts(spec, found, 3) == []
    assert conflicts(spec, found, 1) == ["num_replicas is 3, FLEETWARD_STREAM_REPLICAS asks for 1"]


def test_the_nats_url_may_name_every_node_of_a_cluster() -> None:
    assert server_list("nats://a:4222, nats://b:4222,nats://c:4222") == [
        "nats://a:4222",
        "nats://b:4222",
        "nats://c:4222",
    ]
    assert server_list("nats://a:4222") == ["nats://a:4222"]
    assert server_list(["nats://a:4222"]) == ["nats://a:4222"]
