"""Jobs: what sensors and schedules launch, each over the asset layer it names."""

import dagster as dg

from assets.ingest import HOT_METRICS, HOT_TELEMETRY, PROCESSED, STAGED

stage_telemetry_job = dg.define_asset_job(
    "stage_telemetry",
    selection=dg.AssetSelection.assets(STAGED),
    description="Validate one arrival hour of landing telemetry (dead letters, staging).",
)
publish_telemetry_job = dg.define_asset_job(
    "publish_telemetry",
    selection=dg.AssetSelection.assets(PROCESSED, HOT_TELEMETRY, HOT_METRICS),
    description="Rebuild one event hour in the lake and swap it into ClickHouse.",
)
extract_fleet_core_job = dg.define_asset_job(
    "extract_fleet_core",
    selection=dg.AssetSelection.groups("fleet_core"),
    description="Copy changed fleet-core rows (allow-listed columns) to the lake and ClickHouse.",
)

# Every dbt model: the incremental ones for the run's daily partition, the rest whole.
build_marts_job = dg.define_asset_job(
    "build_marts",
    selection=dg.AssetSelection.kind("dbt"),
    description="dbt build of staging, intermediate and marts for one day (incremental facts) "
    "and everything else in full; dbt tests run as asset checks.",
)

JOBS = [stage_telemetry_job, publish_telemetry_job, extract_fleet_core_job, build_marts_job]
