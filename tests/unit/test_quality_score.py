"""The quality score: each dimension on crafted figures, the weighted total, received counts."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from atlasmesh.lake import Lake
from atlasmesh.telemetry import pipeline
from quality import score as qs
from quality import thresholds as th
from quality.suites.telemetry import ranges

HOUR = datetime(2026, 11, 1, 10, tzinfo=UTC)
ROWS = 10_000


def clean_profile(rows: int = ROWS) -> dict:
    """The measured profile of a flawless hour (the columns `profile_sql` returns)."""
    profile = {
        "rows": rows,
        "vehicles": 10,
        "duplicate_ids": 0,
        "missing_required_rows": 0,
        "unknown_status_rows": 0,
        "recorded_after_arrival_rows": 0,
        "unknown_vehicle_rows": 0,
        "unknown_vehicles": 0,
        "odometer_steps": rows - 10,
        "odometer_decreases": 0,
        "speed_steps": rows - 10,
        "implausible_speed_steps": 0,
        "tire_unit_rows": 0,
        "aux_unit_rows": 0,
        "accuracy_violation_rows": 0,
        "arrival_latency_p95_s": 40.0,
        "arrival_on_time_rows": rows,
        "queryable_rows": rows,
        "queryable_latency_p95_s": 3 * 3600.0,
        "queryable_on_time_rows": rows,
    }
    for name in th.EXPECTED_FIELDS:
        profile[f"{name}_present_rows"] = rows
    for column in [*ranges(), "heading_degrees"]:
        profile[f"{column}_out_of_range"] = 0
    return profile


CLEAN_RECEIVED = qs.Received(delivered=ROWS + 50, accepted=ROWS, duplicates=50, dead_lettered=20.0)

# One defect per dimension, injected into the profile or the received counts.
DEFECTS = {
    "completeness": ({"energy_level_present_rows": int(ROWS * 0.8)}, {}),
    "accuracy": ({"accuracy_violation_rows": 300, "odometer_decreases": 300}, {}),
    "consistency": ({"unknown_vehicle_rows": 120, "unknown_vehicles": 1}, {}),
    "timeliness": ({"arrival_on_time_rows": int(ROWS * 0.7)}, {}),
    "validity": ({}, {"dead_lettered": 600.0}),
    "uniqueness": ({}, {"duplicates": 900}),
}


def dims_of(profile: dict, received: qs.Received, processed: int = ROWS) -> dict:
    dims = qs.telemetry_dimensions(
        profile, received=received, processed_rows=processed, loaded_rows=profile["rows"]
    )
    return {d.name: d for d in dims}


def test_a_clean_hour_passes_every_dimension() -> None:
    dims = dims_of(clean_profile(), CLEAN_RECEIVED)
    assert set(dims) == set(th.DIMENSIONS)
    assert all(d.passed for d in dims.values()), {n: d.detail for n, d in dims.items()}
    total = qs.combine("vehicle_telemetry", "2026-11-01-10:00", list(dims.values()))
    assert total.passed and total.score > 99


@pytest.mark.parametrize("dimension", list(DEFECTS))
def test_each_dimension_drops_when_its_own_defect_is_injected(dimension: str) -> None:
    clean = dims_of(clean_profile(), CLEAN_RECEIVED)
    profile_change, received_change = DEFECTS[dimension]
    received = qs.Received(**{**CLEAN_RECEIVED.__dict__, **received_change})
    broken = dims_of({**clean_profile(), **profile_change}, received)
    assert broken[dimension].score < clean[dimension].score
    assert not broken[dimension].passed
    others = {n for n in th.DIMENSIONS if n != dimension}
    assert {n: broken[n].score for n in others} == {n: clean[n].score for n in others}
    assert all(broken[n].passed for n in others)
    total = qs.combine("vehicle_telemetry", "p", list(broken.values()))
    assert not total.passed and total.failed_dimensions == [dimension]


def test_completeness_threshold_is_ninety_percent_per_field() -> None:
    present = {f: ROWS for f in th.EXPECTED_FIELDS}
    assert qs.completeness({**present, "odometer_km": 9_000}, 0, ROWS).passed
    assert not qs.completeness({**present, "odometer_km": 8_999}, 0, ROWS).passed
    one_missing_required = qs.completeness(present, 1, ROWS)
    assert not one_missing_required.passed and one_missing_required.score < 100


def test_accuracy_fails_at_one_percent_violations() -> None:
    assert qs.accuracy(99, ROWS).passed
    assert not qs.accuracy(100, ROWS).passed
    assert qs.accuracy(100, ROWS).score == pytest.approx(99.0)


def test_consistency_needs_exact_row_counts_and_known_vehicles() -> None:
    ok = qs.consistency(rows=ROWS, unknown_vehicle_rows=0, processed_rows=ROWS, loaded_rows=ROWS)
    assert ok.passed and ok.score == 100
    one_missing = qs.consistency(
        rows=ROWS - 1, unknown_vehicle_rows=0, processed_rows=ROWS, loaded_rows=ROWS - 1
    )
    assert not one_missing.passed and one_missing.score < 100
    nothing_loaded = qs.consistency(
        rows=0, unknown_vehicle_rows=0, processed_rows=500, loaded_rows=None
    )
    assert not nothing_loaded.passed and nothing_loaded.score == 0


def test_timeliness_counts_arrival_and_queryable_latency() -> None:
    both = qs.timeliness(
        rows=ROWS, arrival_on_time_rows=ROWS, queryable_rows=ROWS, queryable_on_time_rows=ROWS
    )
    assert both.passed and both.score == 100
    # A backfilled hour arrived in time but became queryable days later.
    late = qs.timeliness(
        rows=ROWS, arrival_on_time_rows=ROWS, queryable_rows=ROWS, queryable_on_time_rows=0
    )
    assert not late.passed and late.score == 50
    # p95 within the bound: 95% of rows on time passes, 94.99% does not.
    assert qs.timeliness(rows=ROWS, arrival_on_time_rows=9_500).passed
    assert not qs.timeliness(rows=ROWS, arrival_on_time_rows=9_499).passed


def test_validity_and_uniqueness_judge_received_and_stored_data() -> None:
    assert qs.validity(received=1000, dead_lettered=20, stored_invalid_rows=0, rows=980).passed
    assert not qs.validity(received=1000, dead_lettered=21, stored_invalid_rows=0, rows=979).passed
    stored_bad = qs.validity(received=1000, dead_lettered=0, stored_invalid_rows=1, rows=1000)
    assert not stored_bad.passed and stored_bad.score < 100
    assert qs.uniqueness(delivered=1000, duplicates=50, duplicate_ids=0, rows=950).passed
    assert not qs.uniqueness(delivered=1000, duplicates=51, duplicate_ids=0, rows=949).passed
    assert not qs.uniqueness(delivered=1000, duplicates=0, duplicate_ids=1, rows=1000).passed


def test_score_is_the_weighted_mean_of_measured_dimensions() -> None:
    dims = [
        qs.DimensionScore("completeness", 100.0, True),
        qs.DimensionScore("accuracy", 50.0, False),
    ]
    weights = th.DIMENSION_WEIGHTS
    expected = (weights["completeness"] * 100 + weights["accuracy"] * 50) / (
        weights["completeness"] + weights["accuracy"]
    )
    total = qs.combine("d", "p", dims)
    assert total.score == pytest.approx(expected)
    assert total.metadata()["quality_timeliness"] is None
    assert total.failed_dimensions == ["accuracy"]
    assert sum(th.DIMENSION_WEIGHTS.values()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown quality dimension"):
        qs.combine("d", "p", [qs.DimensionScore("freshness", 1.0, True)])


def test_an_empty_hour_is_scored_on_what_can_be_judged() -> None:
    dims = dims_of(clean_profile(rows=0), qs.Received(0, 0, 0, 0.0), processed=0)
    assert set(dims) == {"consistency", "validity", "uniqueness"}
    assert all(d.passed for d in dims.values())


def _write(lake: Lake, rel: str, data: dict) -> None:
    lake.write_bytes(rel, orjson.dumps(data))


def test_dead_letters_are_shared_among_the_event_hours_an_arrival_hour_delivered(tmp_path) -> None:
    lake = Lake(f"file://{tmp_path}")
    early, late = HOUR, HOUR + timedelta(hours=1)
    # Arrival hour `early` staged 900 rows for HOUR and 100 for HOUR+1, and dead-lettered 50.
    stage = pipeline.StageResult(
        arrival_hour=early,
        files=[],
        received=1050,
        staged=1000,
        duplicates=0,
        dead_lettered=50,
        reasons={"OUT_OF_RANGE": 50},
        event_hours={HOUR: 900, HOUR + timedelta(hours=1): 100},
        removed_event_hours=[],
        staged_bytes=0,
        dlq_bytes=0,
    )
    _write(lake, pipeline.arrival_manifest_path(early), stage.to_manifest())
    # Arrival hour `late` delivered 100 late rows of HOUR (10 of them duplicates), no dead letters.
    late_stage = pipeline.StageResult(
        arrival_hour=late,
        files=[],
        received=100,
        staged=100,
        duplicates=0,
        dead_lettered=0,
        reasons={},
        event_hours={HOUR: 100},
        removed_event_hours=[],
        staged_bytes=0,
        dlq_bytes=0,
    )
    _write(lake, pipeline.arrival_manifest_path(late), late_stage.to_manifest())
    build = pipeline.BuildResult(
        event_hour=HOUR,
        arrival_hours=[early, late],
        staged=1000,
        accepted=990,
        duplicates=10,
        accepted_by_arrival={early: 900, late: 90},
        duplicates_by_arrival={early: 0, late: 10},
        checksum="0",
        processed_file=None,
        processed_bytes=0,
    )
    _write(lake, pipeline.event_manifest_path(HOUR), build.to_manifest())
    received = qs.received_counts(lake, HOUR)
    assert received is not None
    assert received.delivered == 1000 and received.duplicates == 10 and received.accepted == 990
    # 900 of the 1000 rows `early` staged went to HOUR: 90% of its 50 dead letters.
    assert received.dead_lettered == pytest.approx(45.0)
    assert received.received == pytest.approx(1045.0)
    assert qs.received_counts(lake, HOUR + timedelta(hours=5)) is None
    # Scoring a range shares the stage manifests among its event hours: same counts.
    stages: dict = {}
    assert qs.received_counts(lake, HOUR, stages=stages) == received
    assert set(stages) == {early, late}
    lake.rm(pipeline.arrival_manifest_path(early))
    assert qs.received_counts(lake, HOUR, stages=stages) == received


def test_importing_the_quality_library_does_not_import_great_expectations() -> None:
    # Dagster imports these modules to build its definitions; GX costs seconds to import.
    code = (
        "import sys, quality.validate, quality.score, quality.context, quality.suites.telemetry, "
        "quality.suites.fleet_core, quality.suites.marts, assets.quality, assets.ingest; "
        "sys.exit('great_expectations' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr or "great_expectations was imported"
