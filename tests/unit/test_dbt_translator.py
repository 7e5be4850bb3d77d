"""dbt nodes become Dagster assets by rule: keys and groups from folders, partitions by materialisation."""

from __future__ import annotations

import json
import os

import dagster as dg
import pytest

from assets.warehouse import (
    FleetDbtTranslator,
    build_warehouse_assets,
    cross_step_tests,
    dbt_build_args,
    window_vars,
)
from atlasmesh.analytics import ensure_manifest, manifest_is_stale
from atlasmesh.settings import Settings
from orchestration.partitions import daily


def _model(path: str, materialized: str = "view", meta: dict | None = None) -> dict:
    """Manifest properties of a model at models/<path>.sql, as dbt writes them."""
    *folders, name = path.split("/")
    return {
        "resource_type": "model",
        "name": name,
        "unique_id": f"model.atlasmesh.{name}",
        "fqn": ["atlasmesh", *folders, name],
        "original_file_path": f"models/{path}.sql",
        "config": {"materialized": materialized, "meta": meta or {}},
        "meta": meta or {},
    }


@pytest.fixture(scope="module")
def translator() -> FleetDbtTranslator:
    return FleetDbtTranslator()


@pytest.mark.parametrize(
    ("path", "key", "group"),
    [
        (
            "staging/fleet_core/stg_fleet_core__vehicles",
            "staging/stg_fleet_core__vehicles",
            "staging",
        ),
        (
            "intermediate/telemetry/int_trips_sessionised",
            "intermediate/int_trips_sessionised",
            "intermediate",
        ),
        ("marts/fleet/dim_vehicles", "marts/dim_vehicles", "marts"),
        ("marts/fct_fleet_days", "marts/fct_fleet_days", "marts"),
    ],
)
def test_key_and_group_come_from_the_first_folder(translator, path, key, group):
    props = _model(path)
    assert translator.get_asset_key(props).to_user_string() == key
    assert translator.get_group_name(props) == group


def test_a_model_at_the_top_of_models_keeps_dagster_dbts_default_key(translator):
    # No layer folder: dagster-dbt's default (the model name), and no made-up group.
    props = _model("scratch_model")
    assert translator.get_asset_key(props) == dg.AssetKey(["scratch_model"])
    assert translator.get_group_name(props) is None


def test_an_explicit_asset_key_in_meta_wins(translator):
    props = _model("marts/odd_one", meta={"dagster": {"asset_key": ["exports", "odd_one"]}})
    assert translator.get_asset_key(props) == dg.AssetKey(["exports", "odd_one"])


def test_sources_map_to_the_ingestion_assets_named_in_their_meta(translator):
    source = {
        "resource_type": "source",
        "name": "vehicle_telemetry",
        "source_name": "telemetry",
        "fqn": ["atlasmesh", "staging", "telemetry", "telemetry", "vehicle_telemetry"],
        "config": {},
        "meta": {"dagster": {"asset_key": ["atlasmesh_analytics", "vehicle_telemetry"]}},
    }
    assert translator.get_asset_key(source) == dg.AssetKey(
        ["atlasmesh_analytics", "vehicle_telemetry"]
    )


@pytest.mark.parametrize(
    ("materialized", "partitioned"),
    [("incremental", True), ("table", False), ("view", False), ("ephemeral", False)],
)
def test_only_incremental_models_are_partitioned_daily(translator, materialized, partitioned):
    props = _model("marts/telemetry/fct_vehicle_days", materialized)
    assert translator.get_partitions_def(props) == (daily if partitioned else None)


def test_a_partition_window_becomes_utc_iso_vars():
    window = daily.time_window_for_partition_key("2026-11-20")
    assert window_vars(window) == {
        "window_start": "2026-11-20T00:00:00+00:00",
        "window_end": "2026-11-21T00:00:00+00:00",
    }


def test_a_range_backfill_is_one_window_over_all_its_days():
    start = daily.time_window_for_partition_key("2026-11-20").start
    end = daily.time_window_for_partition_key("2026-11-26").end
    assert window_vars(dg.TimeWindow(start, end)) == {
        "window_start": "2026-11-20T00:00:00+00:00",
        "window_end": "2026-11-27T00:00:00+00:00",
    }


def _vars(args: list[str]) -> dict:
    return json.loads(args[args.index("--vars") + 1])


def test_build_args_carry_the_resource_vars_and_the_window():
    window = daily.time_window_for_partition_key("2026-11-20")
    args = dbt_build_args({"as_of": "2026-11-21T00:00:00Z", "telemetry_database": "t"}, window)
    assert args[0] == "build"
    assert _vars(args) == {
        "as_of": "2026-11-21T00:00:00Z",
        "telemetry_database": "t",
        "window_start": "2026-11-20T00:00:00+00:00",
        "window_end": "2026-11-21T00:00:00+00:00",
    }


def test_the_partition_window_wins_over_a_fixed_window_var():
    window = daily.time_window_for_partition_key("2026-11-20")
    args = dbt_build_args({"window_start": "2020-01-01T00:00:00Z"}, window)
    assert _vars(args)["window_start"] == "2026-11-20T00:00:00+00:00"


def test_unpartitioned_builds_pass_no_window_and_no_empty_vars():
    assert "--vars" not in dbt_build_args({})


def test_dagster_builds_leave_dbt_unit_tests_to_development_and_ci():
    window = daily.time_window_for_partition_key("2026-11-20")
    for args in (dbt_build_args({}), dbt_build_args({}, window)):
        assert args[args.index("--exclude-resource-type") + 1] == "unit_test"


def test_checks_reading_a_model_from_another_dbt_invocation_are_selected_explicitly():
    # stg -> fct (this step); dim built in an earlier step, not upstream of fct.
    def test(name: str) -> dict:
        return {"fqn": ["atlasmesh", "marts", name]}

    manifest = {
        "parent_map": {
            "model.fct": ["model.stg"],
            "model.stg": ["source.raw"],
            "model.dim": [],
            "test.fct_unique": ["model.fct"],
            "test.fct_vs_source": ["model.fct", "source.raw"],
            "test.fct_to_dim": ["model.fct", "model.dim"],
        },
        "nodes": {
            t: test(t.split(".")[1])
            for t in ("test.fct_unique", "test.fct_vs_source", "test.fct_to_dim")
        },
    }
    checks = ["test.fct_unique", "test.fct_vs_source", "test.fct_to_dim"]
    assert cross_step_tests(manifest, {"model.fct"}, checks) == ["atlasmesh.marts.fct_to_dim"]
    assert cross_step_tests(manifest, {"model.fct", "model.dim"}, checks) == []


def test_manifest_is_stale_when_missing_or_older_than_a_model(tmp_path):
    (tmp_path / "models").mkdir()
    model = tmp_path / "models" / "m.sql"
    model.write_text("select 1")
    assert manifest_is_stale(tmp_path)
    manifest = tmp_path / "target" / "manifest.json"
    manifest.parent.mkdir()
    manifest.write_text("{}")
    assert not manifest_is_stale(tmp_path)
    later = manifest.stat().st_mtime + 5
    os.utime(model, (later, later))
    assert manifest_is_stale(tmp_path)


@pytest.fixture(scope="module")
def project_assets() -> list[dg.AssetsDefinition]:
    return build_warehouse_assets(ensure_manifest(Settings()))


def test_the_project_splits_into_partitioned_incremental_and_unpartitioned_rest(project_assets):
    manifest = json.loads(ensure_manifest(Settings()).read_text())
    models = {
        n["unique_id"]: n for n in manifest["nodes"].values() if n["resource_type"] == "model"
    }
    by_key = {}
    for assets_def in project_assets:
        for key in assets_def.keys:
            by_key[key] = assets_def
    translator = FleetDbtTranslator()
    assert len(by_key) == len(models), "every model is exactly one asset"
    for props in models.values():
        assets_def = by_key[translator.get_asset_key(props)]
        if props["config"]["materialized"] == "incremental":
            assert assets_def.partitions_def == daily
            assert assets_def.backfill_policy == dg.BackfillPolicy.single_run()
        else:
            assert assets_def.partitions_def is None
