"""SimConfig: clear refusals of bad settings, and the derived sizes a run relies on."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from atlasmesh.simulator.config import LINE_FAULTS, SimConfig, SimConfigError
from atlasmesh.telemetry.reasons import FaultClass

START = datetime(2026, 10, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"vehicles": 0}, "vehicles must be"),
        ({"days": 0}, "days must be"),
        ({"interval_s": 0.0001}, "interval_s must be"),
        ({"interval_s": 0.1234}, "finer than a millisecond"),
        ({"start": datetime(2026, 10, 1)}, "no time zone"),
        ({"start": "next tuesday"}, "not an ISO date"),
        ({"fault_rate": 1.5}, "fault_rate must be between 0 and 1"),
        ({"fault_mix": {FaultClass.TRUNCATED_FILE: 1.0}}, "truncated_file_rate"),
        ({"batch_s": 90}, "whole number of minutes"),
        ({"seed": -1}, "seed must be"),
        ({"seed": 2**64}, "seed must be"),
        ({"start": "1900-01-01"}, "outside the simulated era"),
        ({"start": "9999-12-31T23:59:00Z"}, "outside the simulated era"),
        ({"start": "0001-01-01T00:00:00+05:00"}, "out of range"),
        ({"start": "2099-12-31T12:00:00Z"}, "ends after 2100-01-01"),
        ({"origin": "1990-01-01"}, "origin 1990-01-01 is outside"),
        ({"organizations": 50}, "organizations must be"),
        ({"wear_factor": 0}, "wear_factor"),
    ],
)
def test_bad_settings_are_refused_with_a_clear_message(overrides: dict, message: str) -> None:
    params = {"seed": 1, "vehicles": 10, "days": 1.0, "start": START} | overrides
    with pytest.raises(SimConfigError, match=message):
        SimConfig(**params)


def test_sizes_and_defaults_follow_the_settings() -> None:
    config = SimConfig(seed=1, vehicles=1000, days=1, start="2026-10-01", interval_s=1)
    assert config.start == START and config.steps == 86_400 and config.events == 86_400_000
    assert config.end == datetime(2026, 10, 2, tzinfo=UTC)
    assert config.gateway_batch_s == 60  # dense sampling: a batch a minute
    sparse = SimConfig(seed=1, vehicles=36, days=21, start=date(2026, 10, 1), interval_s=30)
    assert sparse.gateway_batch_s == 300 and sparse.n_organizations == 4
    assert sum(sparse.line_fault_rates.values()) == pytest.approx(sparse.fault_rate)
    assert set(sparse.line_fault_rates) == set(LINE_FAULTS) and sparse.file_fault_rate == 0.01


def test_run_id_names_the_config() -> None:
    a = SimConfig(seed=1, vehicles=5, days=1, start=START)
    assert a.run_id == SimConfig(seed=1, vehicles=5, days=1, start="2026-10-01T00:00:00Z").run_id
    assert a.run_id != SimConfig(seed=2, vehicles=5, days=1, start=START).run_id
    assert a.run_id.startswith("seed1-")


def test_fault_mix_weights_split_the_rate() -> None:
    config = SimConfig(
        seed=1, vehicles=5, days=1, start=START, fault_rate=0.1,
        fault_mix={FaultClass.DUPLICATE: 3.0, FaultClass.LATE_ARRIVAL: 1.0},
    )  # fmt: skip
    rates = config.line_fault_rates
    assert rates[FaultClass.DUPLICATE] == pytest.approx(0.075)
    assert rates[FaultClass.LATE_ARRIVAL] == pytest.approx(0.025)
    assert rates[FaultClass.MALFORMED_JSON] == 0


@pytest.mark.parametrize("days", ["nan", "inf", "-inf", "1e12"])
def test_cli_refuses_days_it_cannot_count(days: str) -> None:
    from typer.testing import CliRunner

    from atlasmesh.cli import app

    result = CliRunner().invoke(app, ["simulate", "--vehicles", "1", "--days", days])
    assert result.exit_code == 2 and "days must be in" in result.output, result.output
