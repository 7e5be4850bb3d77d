"""`make demo`: run the whole platform end to end on the embedded default and say where to look."""

from __future__ import annotations

import os
import shutil
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from atlasmesh.settings import Settings

DEMO_DAYS = int(os.environ.get("ATLASMESH_DEMO_DAYS", "7"))
DEMO_VEHICLES = int(os.environ.get("ATLASMESH_DEMO_VEHICLES", "36"))


def _step(title: str) -> float:
    print(f"\n==> {title}", flush=True)
    return time.perf_counter()


def _done(started: float, detail: str = "") -> None:
    print(f"    done in {time.perf_counter() - started:.1f}s {detail}".rstrip(), flush=True)


def _materialize(
    selection, *, partition_range: tuple[str, str] | None = None, run_config: dict | None = None
):
    """Run assets through the Dagster instance, so the run shows in the UI afterwards."""
    import dagster as dg
    from dagster._core.storage.tags import (
        ASSET_PARTITION_RANGE_END_TAG,
        ASSET_PARTITION_RANGE_START_TAG,
    )

    from orchestration.definitions import defs

    definitions = defs()
    job = definitions.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection=set(selection)
    )
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(
            instance=instance,
            run_config=run_config,
            tags={
                ASSET_PARTITION_RANGE_START_TAG: partition_range[0],
                ASSET_PARTITION_RANGE_END_TAG: partition_range[1],
            }
            if partition_range
            else None,
            raise_on_error=False,
        )
    if not result.success:
        failures = [e.message for e in result.all_events if e.is_failure]
        raise SystemExit("demo step failed:\n  " + "\n  ".join(str(f) for f in failures[:5]))
    return result


def _metadata_of(result, key):
    return next(
        e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.asset_key == key
    )


def _sum_metadata(result, key, name: str) -> int:
    """Sum one count over every partition materialised in a run."""
    return sum(
        int(e.materialization.metadata[name].value)
        for e in result.get_asset_materialization_events()
        if e.asset_key == key and name in e.materialization.metadata
    )


def main() -> None:
    """Start the warehouse, simulate a fleet ending now, run the pipeline, print a summary."""
    settings = Settings()
    home = settings.home_dir
    home.mkdir(parents=True, exist_ok=True)
    dagster_home = Path(os.environ.setdefault("DAGSTER_HOME", str(settings.dagster_home)))
    dagster_home.mkdir(parents=True, exist_ok=True)
    if not (dagster_home / "dagster.yaml").exists():
        shutil.copy(Path(__file__).with_name("dagster.yaml"), dagster_home / "dagster.yaml")
    print(f"AtlasMesh demo: state in {home}")

    started = _step("Warehouse (ClickHouse HTTP interface)")
    from atlasmesh.warehouse.client import connect
    from atlasmesh.warehouse.service import ensure_running

    url = ensure_running(settings)
    version = connect(settings).command("SELECT version()")
    _done(started, f"- {url} answers, ClickHouse engine {version}")

    started = _step("Lake")
    from atlasmesh.lake import Lake

    lake = Lake.from_settings(settings)
    lake.write_bytes("_platform/demo-probe.txt", b"writable\n")
    assert lake.read_bytes("_platform/demo-probe.txt") == b"writable\n"
    _done(started, f"- {settings.lake_root} is writable")

    started = _step("Dagster definitions")
    from assets.fleet_core import TABLE_KEYS
    from assets.ingest import HOT_METRICS, HOT_TELEMETRY, HOUR_KEY_FORMAT, PROCESSED, STAGED
    from assets.sources import FLEET_CORE_DB, LANDING_TELEMETRY
    from orchestration.definitions import defs

    graph = defs().resolve_asset_graph()
    _done(started, f"- {len(graph.get_all_asset_keys())} assets load")

    today = datetime.now(UTC).date()
    first = today - timedelta(days=DEMO_DAYS - 1)
    started = _step(
        f"Simulating {DEMO_VEHICLES} vehicles from {first} to now (sources, one Dagster run)"
    )
    result = _materialize(
        [LANDING_TELEMETRY, FLEET_CORE_DB],
        partition_range=(first.isoformat(), today.isoformat()),
        run_config={
            "ops": {
                "fleet_simulation": {
                    "config": {
                        "vehicles": DEMO_VEHICLES,
                        "origin": first.isoformat(),
                        # Half-way, so the demo shows schema v1 and v2 side by side.
                        "firmware_update": (first + timedelta(days=DEMO_DAYS / 2)).isoformat(),
                    }
                }
            }
        },
    )
    landing = _metadata_of(result, LANDING_TELEMETRY)
    _done(
        started,
        f"- {landing['events'].value:,} events in {landing['files'].value:,} landing files",
    )

    started = _step("Extracting fleet-core (allow-listed columns) to the lake and ClickHouse")
    _materialize(list(TABLE_KEYS.values()))
    _done(started)

    now = datetime.now(UTC)
    hours = (f"{first.isoformat()}-00:00", now.strftime(HOUR_KEY_FORMAT))
    started = _step(f"Validating every arrival hour ({hours[0]} .. {hours[1]})")
    result = _materialize([STAGED], partition_range=hours)
    staged = [
        _sum_metadata(result, STAGED, k)
        for k in ("received", "staged", "duplicates", "dead_lettered")
    ]
    _done(
        started,
        f"- received {staged[0]:,} = staged {staged[1]:,} + duplicates {staged[2]:,} "
        f"+ dead-lettered {staged[3]:,}",
    )

    started = _step("Publishing every event hour to processed Parquet and ClickHouse")
    result = _materialize([PROCESSED, HOT_TELEMETRY, HOT_METRICS], partition_range=hours)
    accepted = _sum_metadata(result, PROCESSED, "accepted")
    _done(started, f"- {accepted:,} events accepted")

    client = connect(settings)
    rows = client.command("SELECT count() FROM atlasmesh_analytics.vehicle_telemetry")
    vehicles = client.command(
        "SELECT uniqExact(vehicle_id) FROM atlasmesh_analytics.vehicle_telemetry"
    )
    print(
        f"""
Summary
  lake            {settings.lake_root}
  telemetry       {int(rows):,} rows from {int(vehicles)} vehicles in atlasmesh_analytics.vehicle_telemetry
  warehouse       {url}   (query: curl '{url}/?query=SELECT+1' or clickhouse-connect)
  fleet-core DB   {settings.fleet_core_url}
  Dagster UI      make ui   then open http://127.0.0.1:3000
  stop            make stop (the warehouse service keeps running for the UI and analysts)
"""
    )


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
