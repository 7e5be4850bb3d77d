"""Fleet-core layer: allow-listed, incremental copies of the operational tables."""

from datetime import UTC, datetime

import dagster as dg

from assets.sources import FLEET_CORE_DB
from atlasmesh.fleet_core.extract import LAKE_PREFIX, SPECS, extract_all
from orchestration.resources import FleetCoreResource, LakeResource, WarehouseResource

# One asset per table the allow-list names, so the lineage shows each table; the list
# comes from the allow-list itself, never a second hand-kept copy.
TABLE_KEYS = {name: dg.AssetKey(["fleet_core", name]) for name in SPECS}


class ExtractConfig(dg.Config):
    """`full` re-reads whole tables (a backfill); by default only rows changed since the watermark."""

    full: bool = False


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            key,
            description=f"fleet_core.{name} in ClickHouse and {LAKE_PREFIX}/{name}/ in the lake: "
            "allow-listed columns, extracted incrementally by updated_at, soft deletes carried.",
            group_name="fleet_core",
            deps=[FLEET_CORE_DB],
            skippable=True,
            metadata={"allowed_columns": ", ".join(SPECS[name].column_names)},
        )
        for name, key in TABLE_KEYS.items()
    ],
    can_subset=True,
    pool="warehouse",
)
def fleet_core_tables(
    context: dg.AssetExecutionContext,
    config: ExtractConfig,
    lake: LakeResource,
    warehouse: WarehouseResource,
    fleet_core: FleetCoreResource,
):
    """Extract the selected fleet-core tables changed since the warehouse watermark."""
    tables = [key.path[-1] for key in context.selected_asset_keys]
    results = extract_all(
        fleet_core.url,
        lake.lake(),
        warehouse.client(),
        now=datetime.now(UTC),
        full=config.full,
        tables=tables,
    )
    for name, result in results.items():
        context.log.info(f"fleet_core.{name}: {result.rows_written} rows written")
        yield dg.MaterializeResult(
            asset_key=TABLE_KEYS[name],
            metadata={
                **result.metadata(),
                "path": dg.MetadataValue.path(lake.lake().uri(f"{LAKE_PREFIX}/{name}/")),
            },
        )
