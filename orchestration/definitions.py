"""The one Dagster entry point, loaded by workspace.yaml."""

from __future__ import annotations

import dagster as dg

from assets import sources
from atlasmesh.settings import Settings
from orchestration.resources import build_resources


@dg.definitions
def defs() -> dg.Definitions:
    """Every asset, check, sensor and resource of the platform, built from the settings."""
    settings = Settings()
    modules = [sources]
    return dg.Definitions(
        assets=dg.load_assets_from_modules(modules),
        asset_checks=dg.load_asset_checks_from_modules(modules),
        resources=build_resources(settings),
    )
