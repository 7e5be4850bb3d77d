"""The dbt project materialised through Dagster over the simulated fleet, one daily partition."""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from datetime import timedelta

import dagster as dg
import pytest

from assets.warehouse import build_warehouse_assets
from atlasmesh.analytics import PROJECT_DIR, dbt_executable, ensure_manifest
from orchestration.definitions import defs
from orchestration.partitions import daily
from orchestration.resources import DbtResource, WarehouseResource

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.xdist_group("fleet"),
    # Building the fleet, then dbt through Dagster and a full dbt build: minutes on 2 busy cores.
    pytest.mark.timeout(1200),
]

LANDING = dg.AssetKey(["landing", "vehicle_telemetry"])
# The vehicle-day fact: incremental, one row per vehicle and activity_date.
VEHICLE_DAYS = dg.AssetKey(["marts", "fct_vehicle_days"])


@dataclass(frozen=True)
class DagsterDbtRun:
    """One Dagster run of every dbt asset for `day`, marts in `schema`."""

    result: dg.ExecuteInProcessResult
    assets: list[dg.AssetsDefinition]
    schema: str
    day: str


@pytest.fixture(scope="module")
def dbt_run(simulated_fleet, tmp_path_factory) -> DagsterDbtRun:
    settings = simulated_fleet.warehouse.settings
    assets = build_warehouse_assets(ensure_manifest(settings))
    schema = f"dagster_{uuid.uuid4().hex[:8]}"
    # The second simulated day: its sessions reach into the first, so the window matters.
    day = (simulated_fleet.start + timedelta(days=1)).date().isoformat()
    dbt = DbtResource(
        project_dir=PROJECT_DIR,
        dbt_executable=dbt_executable(),
        warehouse=WarehouseResource(
            url=settings.warehouse_url,
            user=settings.clickhouse_user,
            password=settings.clickhouse_password.get_secret_value(),
        ),
        target_schema=schema,
        artifacts_dir=str(tmp_path_factory.mktemp("dbt_runs")),
        dbt_vars={**simulated_fleet.dbt_vars(), "as_of": simulated_fleet.end.isoformat()},
    )
    result = dg.materialize(assets, partition_key=day, resources={"dbt": dbt})
    return DagsterDbtRun(result, assets, schema, day)


def test_every_dbt_model_materialises_in_one_partitioned_run(dbt_run):
    assert dbt_run.result.success
    expected = {key for assets_def in dbt_run.assets for key in assets_def.keys}
    materialised = {e.asset_key for e in dbt_run.result.get_asset_materialization_events()}
    assert materialised == expected
    partitioned = {
        e.asset_key: e.partition
        for e in dbt_run.result.get_asset_materialization_events()
        if e.partition is not None
    }
    assert VEHICLE_DAYS in partitioned
    assert set(partitioned.values()) == {dbt_run.day}


def test_the_partitioned_fact_holds_exactly_that_day(dbt_run, simulated_fleet):
    client = simulated_fleet.warehouse.client(database=dbt_run.schema)
    try:
        days = client.query(
            "SELECT activity_date, count(), uniqExact(vehicle_id) FROM fct_vehicle_days "
            "GROUP BY activity_date"
        ).result_rows
    finally:
        client.close()
    assert [str(d) for d, _, _ in days] == [dbt_run.day]
    # The fixture's six vehicles all drive every day.
    assert days[0][1] == days[0][2] == 6


@pytest.mark.parametrize(
    ("fact", "day_column", "columns"),
    [
        (
            "fct_vehicle_days",
            "activity_date",
            "vehicle_id, telemetry_points, round(distance_km, 6), stops, round(driving_hours, 6)",
        ),
        ("fct_trips", "trip_date", "trip_id, status, round(distance_km, 6), actual_start"),
    ],
)
def test_the_partition_matches_a_full_dbt_build_of_that_day(
    dbt_run, fleet_analytics, fact, day_column, columns
):
    query = f"SELECT {columns} FROM {{db}}.{fact} WHERE {day_column} = '{dbt_run.day}' ORDER BY 1"
    from_dagster = fleet_analytics.query_df(query.format(db=dbt_run.schema))
    from_full_build = fleet_analytics.query_df(query.format(db=fleet_analytics.schema))
    assert from_dagster.height > 0
    assert from_dagster.equals(from_full_build)


def test_dbt_tests_ran_as_passing_asset_checks(dbt_run):
    evaluations = dbt_run.result.get_asset_check_evaluations()
    by_asset = {e.asset_key for e in evaluations}
    assert VEHICLE_DAYS in by_asset
    assert any(key.path[0] == "staging" for key in by_asset)
    # Warn-severity dbt tests flag data to look at, not broken models: only errors fail.
    failed = [
        e.check_name
        for e in evaluations
        if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR
    ]
    assert not failed
    # Every check the dbt assets declare was evaluated, none silently skipped.
    declared = {key for assets_def in dbt_run.assets for key in assets_def.check_keys}
    assert {e.asset_check_key for e in evaluations} == declared


def test_lineage_runs_from_landing_files_through_ingestion_to_the_marts(tmp_path, monkeypatch):
    monkeypatch.setenv("ATLASMESH_HOME", str(tmp_path))
    graph = defs().resolve_asset_graph()
    upstream = dg.AssetSelection.assets(VEHICLE_DAYS).upstream().resolve(graph)
    assert {
        LANDING,
        dg.AssetKey(["processed", "vehicle_telemetry"]),
        dg.AssetKey(["atlasmesh_analytics", "vehicle_telemetry"]),
        dg.AssetKey(["fleet_core", "vehicles"]),
        dg.AssetKey(["staging", "stg_telemetry__vehicle_telemetry"]),
    } <= upstream
    assert graph.get(VEHICLE_DAYS).partitions_def == daily
    # Every mart that reads telemetry can be traced back to the landing files.
    marts = dg.AssetSelection.groups("marts").resolve(graph)
    from_landing = dg.AssetSelection.assets(LANDING).downstream().resolve(graph)
    assert VEHICLE_DAYS in marts & from_landing


def test_the_connection_reaches_dbt_without_leaking_into_this_process(dbt_run, simulated_fleet):
    # The run above reached a service on a non-default port, so dbt got DBT_CLICKHOUSE_PORT;
    # this process must not keep it (tests and the demo run many things in one process).
    port = str(simulated_fleet.warehouse.port)
    assert os.environ.get("DBT_CLICKHOUSE_PORT") != port


def test_the_password_reaches_dbt_but_never_its_output(warehouse_service_auth, tmp_path):
    settings = warehouse_service_auth.settings
    password = settings.clickhouse_password.get_secret_value()
    dbt = DbtResource(
        project_dir=PROJECT_DIR,
        dbt_executable=dbt_executable(),
        warehouse=WarehouseResource(
            url=settings.warehouse_url, user=settings.clickhouse_user, password=password
        ),
        artifacts_dir=str(tmp_path),
    )
    invocation = dbt.cli(["debug"], raise_on_error=False, manifest=ensure_manifest(settings))
    output = [json.dumps(event.raw_event) for event in invocation.stream_raw_events()]
    assert invocation.is_successful(), "\n".join(output[-20:])
    assert any("OK connection ok" in line for line in output)
    assert not [line for line in output if password in line]
