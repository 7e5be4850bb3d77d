"""The Dagster entry point loads, and the asset graph has the shape the platform promises."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime

import dagster as dg

from assets.ingest import GATE, HOT_TELEMETRY, published_telemetry
from orchestration.definitions import defs
from orchestration.schedules import marts_after_ingestion, marts_partition_for


def test_definitions_load_with_every_resource(tmp_path, monkeypatch):
    monkeypatch.setenv("ATLASMESH_HOME", str(tmp_path))
    definitions = defs()
    assert {"lake", "warehouse", "fleet_core", "platform", "dbt"} <= set(definitions.resources)
    graph = definitions.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"landing/vehicle_telemetry", "sources/fleet_core_db"} <= keys


def test_every_asset_is_described_and_grouped(tmp_path, monkeypatch):
    monkeypatch.setenv("ATLASMESH_HOME", str(tmp_path))
    graph = defs().resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.description, f"{key.to_user_string()} has no description"
        assert node.group_name != "default", f"{key.to_user_string()} has no group"


def test_dbt_models_are_keyed_and_grouped_by_layer(tmp_path, monkeypatch):
    monkeypatch.setenv("ATLASMESH_HOME", str(tmp_path))
    graph = defs().resolve_asset_graph()
    dbt_keys = dg.AssetSelection.kind("dbt").resolve(graph)
    assert dbt_keys, "the dbt project has no models"
    for key in dbt_keys:
        layer, name = key.path
        assert layer in {"staging", "intermediate", "marts"}, key.to_user_string()
        assert graph.get(key).group_name == layer
        assert name.startswith(("stg_", "int_")) == (layer != "marts")


def test_dbt_sources_resolve_to_ingestion_assets_not_stubs(tmp_path, monkeypatch):
    # A dbt source whose meta key matches no ingestion asset would show as a loose stub
    # and break the lineage from landing files to marts.
    monkeypatch.setenv("ATLASMESH_HOME", str(tmp_path))
    graph = defs().resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        assert graph.get(key).is_materializable, f"{key.to_user_string()} has no producer"


def test_secrets_from_environment_stay_env_var_references(tmp_path, monkeypatch):
    monkeypatch.setenv("ATLASMESH_HOME", str(tmp_path))
    monkeypatch.setenv("ATLASMESH_S3_SECRET_ACCESS_KEY", "s3cr3t-value")
    monkeypatch.setenv("ATLASMESH_CLICKHOUSE_PASSWORD", "ch-s3cr3t")
    resources = defs().resources
    assert isinstance(resources["lake"].s3_secret_access_key, dg.EnvVar)
    assert isinstance(resources["warehouse"].password, dg.EnvVar)
    # dbt reaches the warehouse through the same resource, so its password is no copy.
    assert isinstance(resources["dbt"].warehouse.password, dg.EnvVar)


def test_marts_wait_for_the_last_hour_of_a_day_to_settle():
    def at(hour: int, day: int = 28) -> str:
        return marts_partition_for(datetime(2026, 11, day, hour, 20, tzinfo=UTC))

    # Yesterday's 23:00 hour settles at 02:00: until the 02:20 tick, yesterday is rebuilt.
    assert [at(0), at(1), at(2)] == ["2026-11-27"] * 3
    assert [at(3), at(12), at(23)] == ["2026-11-28"] * 3


def test_the_marts_job_targets_every_dbt_model_and_nothing_else(tmp_path, monkeypatch):
    monkeypatch.setenv("ATLASMESH_HOME", str(tmp_path))
    definitions = defs()
    graph = definitions.resolve_asset_graph()
    job = definitions.resolve_job_def("build_marts")
    assert job.asset_layer.executable_asset_keys == dg.AssetSelection.kind("dbt").resolve(graph)


def test_the_marts_schedule_requests_a_partition_of_the_marts_job(tmp_path, monkeypatch):
    monkeypatch.setenv("ATLASMESH_HOME", str(tmp_path))
    definitions = defs()
    job = definitions.resolve_job_def("build_marts")
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(
            instance=instance,
            scheduled_execution_time=datetime(2026, 11, 28, 1, 20, tzinfo=UTC),
            repository_def=definitions.get_repository_def(),
        )
        [request] = marts_after_ingestion.evaluate_tick(context).run_requests
    assert request.partition_key == "2026-11-27"
    assert job.partitions_def.has_partition_key(request.partition_key)


def test_the_quality_gate_is_a_blocking_check_of_the_publish_step(tmp_path, monkeypatch):
    # In the step that loads the hot path, so a backfill's range run gates every hour too.
    monkeypatch.setenv("ATLASMESH_HOME", str(tmp_path))
    definitions = defs()
    (spec,) = [s for s in published_telemetry.check_specs if s.key == GATE]
    assert spec.blocking and spec.asset_key == HOT_TELEMETRY
    graph = definitions.resolve_asset_graph()
    assert graph.get_check_keys_for_assets({HOT_TELEMETRY}) == {GATE}
    job = definitions.resolve_job_def("publish_telemetry")
    assert GATE in job.asset_layer.asset_graph.asset_check_keys


def test_loading_the_definitions_does_not_import_great_expectations(tmp_path):
    code = (
        "import sys; from orchestration.definitions import defs; defs(); "
        "sys.exit('great_expectations' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "ATLASMESH_HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr[-2000:] or "great_expectations was imported"
