"""The one Dagster entry point, loaded by workspace.yaml."""

import dagster as dg

from assets import fleet_core, ingest, sources
from assets.warehouse import build_warehouse_assets
from atlasmesh.analytics import ensure_manifest
from atlasmesh.settings import Settings
from orchestration.alerts import ALERT_SENSORS
from orchestration.jobs import JOBS
from orchestration.resources import build_resources
from orchestration.schedules import SCHEDULES
from orchestration.sensors import SENSORS


@dg.definitions
def defs() -> dg.Definitions:
    """Every asset, check, job, sensor and resource of the platform, built from the settings."""
    settings = Settings()
    # The telemetry gate is a check of the publish step (assets.quality has no definitions).
    modules = [sources, fleet_core, ingest]
    # A fresh clone has no dbt manifest, and an edited model makes it stale: parse first.
    dbt = build_warehouse_assets(ensure_manifest(settings))
    return dg.Definitions(
        assets=[*dg.load_assets_from_modules(modules), *dbt],
        jobs=JOBS,
        sensors=[*SENSORS, *ALERT_SENSORS],
        schedules=SCHEDULES,
        resources=build_resources(settings),
    )
