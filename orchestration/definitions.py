"""The one Dagster entry point, loaded by workspace.yaml."""

import dagster as dg

from assets import fleet_core, ingest, sources
from atlasmesh.settings import Settings
from orchestration.jobs import JOBS
from orchestration.resources import build_resources
from orchestration.schedules import SCHEDULES
from orchestration.sensors import SENSORS


@dg.definitions
def defs() -> dg.Definitions:
    """Every asset, check, job, sensor and resource of the platform, built from the settings."""
    settings = Settings()
    modules = [sources, fleet_core, ingest]
    return dg.Definitions(
        assets=dg.load_assets_from_modules(modules),
        asset_checks=dg.load_asset_checks_from_modules(modules),
        jobs=JOBS,
        sensors=SENSORS,
        schedules=SCHEDULES,
        resources=build_resources(settings),
    )
