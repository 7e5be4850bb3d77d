"""The ingest graph in Dagster: per-partition counts and checks, sensors that fan out hours."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from assets.fleet_core import TABLE_KEYS, fleet_core_tables
from assets.ingest import (
    CONSERVED,
    HOT_METRICS,
    HOT_TELEMETRY,
    PROCESSED,
    STAGED,
    published_telemetry,
    staged_telemetry,
)
from assets.sources import fleet_simulation
from atlasmesh.lake import Lake
from atlasmesh.telemetry.pipeline import landing_files
from atlasmesh.warehouse import service
from orchestration.resources import build_resources
from orchestration.sensors import new_landing_files, staged_event_hours
from tests.fixtures.platform import simulated_day
from tests.fixtures.warehouse import start_service

# Recent enough for the 90-day hot retention, old enough to be complete.
DAY = (datetime.now(UTC) - timedelta(days=3)).date().isoformat()
ASSETS = [fleet_simulation, fleet_core_tables, staged_telemetry, published_telemetry]


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A home with its own warehouse service, a simulated day and extracted fleet-core."""
    home = tmp_path_factory.mktemp("ingest_home")
    with (
        dg.instance_for_test() as instance,
        simulated_day(home, DAY, instance, fault_rate=0.05) as (settings, resources),
    ):
        yield {"resources": resources, "instance": instance, "settings": settings}


def _job(platform: dict, selection: list[dg.AssetKey]) -> dg.JobDefinition:
    defs = dg.Definitions(assets=ASSETS, resources=platform["resources"])
    return defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection=set(selection))


def _checks(result: dg.ExecuteInProcessResult) -> list:
    return [
        e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]


def test_one_arrival_hour_records_conserved_counts(platform):
    result = _job(platform, [STAGED]).execute_in_process(
        instance=platform["instance"], partition_key=f"{DAY}-10:00"
    )
    assert result.success
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == STAGED]
    meta = {k: v.value for k, v in event.materialization.metadata.items()}
    assert meta["received"] > 0
    assert meta["received"] == meta["staged"] + meta["duplicates"] + meta["dead_lettered"]
    assert event.materialization.partition == f"{DAY}-10:00"
    (check,) = _checks(result)
    assert check.check_name == CONSERVED and check.passed


def test_a_backfill_records_every_hour_as_its_own_partition(platform):
    tags = {
        ASSET_PARTITION_RANGE_START_TAG: f"{DAY}-00:00",
        ASSET_PARTITION_RANGE_END_TAG: f"{DAY}-23:00",
    }
    staged = _job(platform, [STAGED]).execute_in_process(instance=platform["instance"], tags=tags)
    assert staged.success
    partitions = {
        e.materialization.partition
        for e in staged.get_asset_materialization_events()
        if e.asset_key == STAGED
    }
    assert len(partitions) == 24
    per_hour = [c for c in _checks(staged) if c.partition is not None]
    assert len(per_hour) == 24 and all(c.passed for c in per_hour)

    published = _job(platform, [PROCESSED, HOT_TELEMETRY, HOT_METRICS]).execute_in_process(
        instance=platform["instance"], tags=tags
    )
    assert published.success
    accepted = sum(
        e.materialization.metadata["accepted"].value
        for e in published.get_asset_materialization_events()
        if e.asset_key == PROCESSED
    )
    client = platform["resources"]["warehouse"].client()
    in_warehouse = client.command(
        "SELECT count() FROM atlasmesh_analytics.vehicle_telemetry "
        f"WHERE toDate(recorded_at) = '{DAY}'"
    )
    assert accepted > 0
    assert int(in_warehouse) == accepted


def test_sensors_request_arrival_hours_then_the_event_hours_they_touched(platform):
    resources = platform["resources"]
    with dg.build_sensor_context(instance=platform["instance"], resources=resources) as ctx:
        first = new_landing_files(ctx)
    arrival_keys = {r.partition_key for r in first.run_requests}
    assert f"{DAY}-10:00" in arrival_keys
    # Only hours that hold deliveries (another test may add an older day to this lake).
    lake = Lake.from_settings(platform["settings"])
    assert all(
        landing_files(lake, datetime.strptime(k, "%Y-%m-%d-%H:%M").replace(tzinfo=UTC))
        for k in arrival_keys
    )
    # Nothing new since the cursor: nothing is requested twice.
    with dg.build_sensor_context(
        instance=platform["instance"], resources=resources, cursor=first.cursor
    ) as ctx:
        assert not new_landing_files(ctx).run_requests

    _job(platform, [STAGED]).execute_in_process(
        instance=platform["instance"], partition_key=f"{DAY}-11:00"
    )
    with dg.build_sensor_context(instance=platform["instance"]) as ctx:
        requested = staged_event_hours(ctx)
    event_keys = {r.partition_key for r in requested.run_requests}
    assert f"{DAY}-11:00" in event_keys or f"{DAY}-10:00" in event_keys
    assert int(requested.cursor) > 0


def test_staging_refuses_to_run_without_fleet_core_vehicles(tmp_path):
    from atlasmesh.analytics import prepare_warehouse

    svc = start_service(tmp_path / "empty")
    try:
        # No table at all, then the empty one a first dbt build creates before any extraction.
        for prepare in (lambda: None, lambda: prepare_warehouse(svc.settings)):
            prepare()
            result = dg.materialize(
                [staged_telemetry],
                resources=build_resources(svc.settings),
                partition_key=f"{DAY}-10:00",
                raise_on_error=False,
            )
            assert not result.success
            failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
            assert "fleet_core.vehicles holds no vehicles yet" in str(failure.event_specific_data)
    finally:
        service.stop(svc.settings, timeout=30)


def test_history_older_than_hot_retention_stops_at_the_lake(platform, tmp_path):
    old_day = (datetime.now(UTC) - timedelta(days=120)).date().isoformat()
    config = {
        "ops": {
            "fleet_simulation": {
                "config": {"seed": 7, "vehicles": 2, "interval_s": 300.0, "origin": old_day}
            }
        }
    }
    resources = platform["resources"]
    assert dg.materialize(
        [fleet_simulation], resources=resources, partition_key=old_day, run_config=config
    ).success
    # The second fleet (another seed, rows dated in the past) reaches fleet_core.vehicles
    # through a full extraction: an incremental one only reads past the watermark.
    assert dg.materialize(
        [fleet_core_tables],
        resources=resources,
        selection=list(TABLE_KEYS.values()),
        run_config={"ops": {"fleet_core_tables": {"config": {"full": True}}}},
    ).success
    hour = f"{old_day}-12:00"
    assert _job(platform, [STAGED]).execute_in_process(partition_key=hour).success
    published = _job(platform, [PROCESSED, HOT_TELEMETRY, HOT_METRICS]).execute_in_process(
        partition_key=hour
    )
    assert published.success
    meta = {
        e.asset_key: e.materialization.metadata
        for e in published.get_asset_materialization_events()
    }
    assert meta[PROCESSED]["accepted"].value > 0
    assert "retention" in meta[HOT_TELEMETRY]["skipped"].value
