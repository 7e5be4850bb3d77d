"""The Dagster entry point loads, and the asset graph has the shape the platform promises."""

from __future__ import annotations

import dagster as dg

from orchestration.definitions import defs


def test_definitions_load_with_every_resource(tmp_path, monkeypatch):
    monkeypatch.setenv("ATLASMESH_HOME", str(tmp_path))
    definitions = defs()
    assert {"lake", "warehouse", "fleet_core", "platform"} <= set(definitions.resources)
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


def test_secrets_from_environment_stay_env_var_references(tmp_path, monkeypatch):
    monkeypatch.setenv("ATLASMESH_HOME", str(tmp_path))
    monkeypatch.setenv("ATLASMESH_S3_SECRET_ACCESS_KEY", "s3cr3t-value")
    lake = defs().resources["lake"]
    assert isinstance(lake.s3_secret_access_key, dg.EnvVar)
