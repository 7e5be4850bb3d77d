"""The `sources` asset group simulates a partition window into landing files and fleet-core."""

from __future__ import annotations

import dagster as dg

from assets.sources import FLEET_CORE_DB, LANDING_TELEMETRY, fleet_simulation
from atlasmesh.fleet_core.store import FleetCoreStore
from atlasmesh.lake import Lake
from atlasmesh.settings import Settings
from orchestration.resources import build_resources

SMALL = {"ops": {"fleet_simulation": {"config": {"vehicles": 4, "interval_s": 300.0}}}}


def _run(settings: Settings, partition: str) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [fleet_simulation],
        resources=build_resources(settings),
        partition_key=partition,
        run_config=SMALL,
    )


def test_simulation_partition_lands_files_and_rows(tmp_path):
    settings = Settings(home=tmp_path)
    result = _run(settings, "2026-03-02")
    assert result.success
    meta = {
        e.asset_key: e.materialization.metadata for e in result.get_asset_materialization_events()
    }
    assert meta[LANDING_TELEMETRY]["events"].value == 4 * 288

    lake = Lake.from_settings(settings)
    files = lake.glob("landing/telemetry/schema=v*/date=*/hour=*/*.jsonl.gz")
    assert len(files) == meta[LANDING_TELEMETRY]["files"].value
    # Arrival folders start at the partition's day (late files may spill into the next).
    assert min(f.path for f in files).split("date=")[1].startswith("2026-03-02")

    store = FleetCoreStore(settings.fleet_core_url)
    try:
        vehicles = store.read("vehicles")
    finally:
        store.close()
    assert len(vehicles) == 4
    assert meta[FLEET_CORE_DB]["rows_written"].value["vehicles"] == 4


def test_rerunning_a_partition_reproduces_the_same_landing_bytes(tmp_path):
    first = _run(Settings(home=tmp_path / "a"), "2026-03-02")
    second = _run(Settings(home=tmp_path / "b"), "2026-03-02")

    def digest(result: dg.ExecuteInProcessResult) -> str:
        return next(
            e.materialization.metadata["landing_digest"].value
            for e in result.get_asset_materialization_events()
            if e.asset_key == LANDING_TELEMETRY
        )

    assert digest(first) == digest(second)
