"""The watchdog's settings as read from the environment (services/config.py)."""

from __future__ import annotations

import pytest

from fleetward.services.config import Settings, WatchdogSettings
from fleetward.services.errors import FleetwardError


def test_the_failed_runs_count_has_a_default_an_env_var_and_a_floor() -> None:
    assert WatchdogSettings.from_env({}).failed_runs == 5
    assert WatchdogSettings.from_env({"FLEETWARD_WATCHDOG_FAILED_RUNS": "3"}).failed_runs == 3
    with pytest.raises(FleetwardError):
        WatchdogSettings.from_env({"FLEETWARD_WATCHDOG_FAILED_RUNS": "0"})


def test_the_review_sla_has_a_default_an_env_var_and_zero_for_none() -> None:
    assert WatchdogSettings.from_env({}).review_sla_s == 86_400.0
    env = {"FLEETWARD_WATCHDOG_REVIEW_SLA_S": "0"}
    assert WatchdogSettings.from_env(env).review_sla_s == 0.0


@pytest.mark.parametrize("raw", ["inf", "nan", "-inf", "1e999"])
@pytest.mark.parametrize("name", ["FLEETWARD_KPI_GAUGES_S", "FLEETWARD_STALL_S",
                                  "FLEETWARD_WATCHDOG_INTERVAL_S"])  # fmt: skip
def test_a_number_that_is_not_finite_is_refused_in_one_line(name: str, raw: str) -> None:
    """inf would make a period that never ends, nan one that never compares."""
    with pytest.raises(FleetwardError, match=name):
        Settings.from_env({name: raw})
