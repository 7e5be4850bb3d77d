"""Ingest layer: landing telemetry validated, staged, published to the lake and ClickHouse."""

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
from dagster._core.definitions.asset_checks.asset_check_evaluation import AssetCheckEvaluation

from assets.fleet_core import TABLE_KEYS
from assets.sources import LANDING_TELEMETRY
from orchestration.partitions import hourly
from orchestration.resources import LakeResource, WarehouseResource

STAGED = dg.AssetKey(["staging", "vehicle_telemetry"])
PROCESSED = dg.AssetKey(["processed", "vehicle_telemetry"])
HOT_TELEMETRY = dg.AssetKey(["atlasmesh_analytics", "vehicle_telemetry"])
HOT_METRICS = dg.AssetKey(["atlasmesh_analytics", "vehicle_metrics_hourly"])

CONSERVED = "received_equals_accepted_duplicates_dead_lettered"
HOUR_KEY_FORMAT = "%Y-%m-%d-%H:%M"

# An event hour is built from the arrival hours around it; deliveries later than this
# re-open it through the staged_hours sensor instead of through the partition mapping.
ON_TIME_ARRIVALS = dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=1)


def hours_of(context: dg.AssetExecutionContext) -> list[datetime]:
    """The hours a (possibly multi-partition) run covers, oldest first."""
    window = context.partition_time_window
    hours, hour = [], window.start
    while hour < window.end:
        hours.append(hour.astimezone(UTC))
        hour += timedelta(hours=1)
    return hours


@dataclass
class HourOutcome:
    """What one hour of work produced: metadata per asset and conservation checks per asset."""

    metadata: dict[dg.AssetKey, dict[str, Any]]
    checks: dict[dg.AssetKey, bool] = field(default_factory=dict)


def _partition_runs(
    context: dg.AssetExecutionContext, work: Callable[[datetime], HourOutcome]
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Run `work` per hour so that every partition gets its own metadata and check result.

    A sensor's run covers one hour: its results are ordinary outputs, so downstream steps
    in the same run go ahead. A backfill covers many hours in one process (single-run
    policy): each hour is then recorded as its own partition materialisation and check
    evaluation, never as one aggregate smeared over the range.
    """
    hours = hours_of(context)
    failed: list[str] = []
    for done, hour in enumerate(hours, start=1):
        partition = hour.strftime(HOUR_KEY_FORMAT)
        outcome = work(hour)
        failed += [partition for passed in outcome.checks.values() if not passed]
        if len(hours) == 1:
            for key, metadata in outcome.metadata.items():
                yield dg.MaterializeResult(asset_key=key, metadata=metadata)
            for key, passed in outcome.checks.items():
                yield dg.AssetCheckResult(
                    asset_key=key,
                    check_name=CONSERVED,
                    passed=passed,
                    metadata=_counts(outcome.metadata[key]),
                )
            continue
        for key, metadata in outcome.metadata.items():
            context.log_event(dg.AssetMaterialization(key, partition=partition, metadata=metadata))
        for key, passed in outcome.checks.items():
            context.log_event(
                AssetCheckEvaluation(
                    asset_key=key,
                    check_name=CONSERVED,
                    passed=passed,
                    partition=partition,
                    metadata=_counts(outcome.metadata[key]),
                )
            )
        if done % 24 == 0 or done == len(hours):
            context.log.info(f"{done}/{len(hours)} hours done")
    if len(hours) > 1:
        for key in context.selected_asset_check_keys:
            yield dg.AssetCheckResult(
                asset_key=key.asset_key,
                check_name=key.name,
                passed=not failed,
                metadata={"hours": len(hours), "failed_partitions": ", ".join(failed) or "none"},
            )


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            STAGED,
            description="Landing files of one ARRIVAL hour validated against the schema registry: "
            "dead letters to dlq/vehicle_telemetry/, accepted rows staged by event hour under "
            "staging/vehicle_telemetry/, a manifest with every count.",
            group_name="ingest",
            partitions_def=hourly,
            deps=[
                LANDING_TELEMETRY,
                dg.AssetDep(TABLE_KEYS["vehicles"]),
            ],
            skippable=True,
        )
    ],
    check_specs=[
        dg.AssetCheckSpec(
            CONSERVED,
            asset=STAGED,
            description="received = staged + duplicates + dead-lettered, for every arrival hour.",
            blocking=True,
        )
    ],
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def staged_telemetry(
    context: dg.AssetExecutionContext, lake: LakeResource, warehouse: WarehouseResource
):
    """Validate each arrival hour of landing telemetry; nothing is lost, every count is kept."""
    from atlasmesh.telemetry.pipeline import DLQ_PREFIX, stage_arrival_hour
    from atlasmesh.telemetry.validate import partition_path

    the_lake = lake.lake()
    known = _known_vehicle_ids(warehouse)

    def stage(hour: datetime) -> HourOutcome:
        meta = stage_arrival_hour(the_lake, hour, known_vehicles=known).metadata()
        path = the_lake.uri(f"{partition_path(DLQ_PREFIX, hour)}/")
        return HourOutcome({STAGED: _metadata(meta, path)}, {STAGED: bool(meta["conserved"])})

    yield from _partition_runs(context, stage)


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            PROCESSED,
            description="Validated telemetry by EVENT hour (recorded_at, UTC) as Parquet under "
            "processed/vehicle_telemetry/date=/hour=/, duplicates across deliveries dropped.",
            group_name="ingest",
            partitions_def=hourly,
            deps=[dg.AssetDep(STAGED, partition_mapping=ON_TIME_ARRIVALS)],
            skippable=True,
        ),
        dg.AssetSpec(
            HOT_TELEMETRY,
            description="ClickHouse atlasmesh_analytics.vehicle_telemetry (seed §9.2 hot path, "
            "TTL 90 days): each event hour swapped in atomically from the processed lake hour.",
            group_name="ingest",
            partitions_def=hourly,
            deps=[PROCESSED],
            skippable=True,
        ),
        dg.AssetSpec(
            HOT_METRICS,
            description="ClickHouse atlasmesh_analytics.vehicle_metrics_hourly: per vehicle and "
            "hour, computed from the same rows in the same swap, so it always matches.",
            group_name="ingest",
            partitions_def=hourly,
            deps=[HOT_TELEMETRY],
            skippable=True,
        ),
    ],
    check_specs=[
        dg.AssetCheckSpec(
            CONSERVED,
            asset=PROCESSED,
            description="staged = accepted + duplicates, for every event hour.",
            blocking=True,
        )
    ],
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool="warehouse",
)
def published_telemetry(
    context: dg.AssetExecutionContext, lake: LakeResource, warehouse: WarehouseResource
):
    """Rebuild each event hour from every delivery staged for it, then swap it into ClickHouse."""
    from atlasmesh.telemetry.pipeline import PROCESSED_PREFIX, build_event_hour
    from atlasmesh.telemetry.validate import partition_path
    from atlasmesh.warehouse.telemetry import RETENTION_DAYS, ensure_schema, load_hour_from_lake

    the_lake, client = lake.lake(), warehouse.client()
    ensure_schema(client)

    def publish(hour: datetime) -> HourOutcome:
        built = build_event_hour(the_lake, hour).metadata()
        path = the_lake.uri(f"{partition_path(PROCESSED_PREFIX, hour)}/")
        if hour < datetime.now(UTC) - timedelta(days=RETENTION_DAYS):
            # The hot table keeps 90 days (seed §9.2): its TTL would drop an older hour
            # again at once, so a backfill of old history stops at the lake.
            skipped = {"rows": 0, "skipped": f"older than the {RETENTION_DAYS}-day hot retention"}
            hot = {HOT_TELEMETRY: skipped, HOT_METRICS: skipped}
        else:
            # Loaded from what was just published, never from staging: the warehouse and
            # the lake hold the same rows. An hour with nothing accepted has no processed
            # file and clears the warehouse hour.
            loaded = load_hour_from_lake(
                client, the_lake, hour, missing_ok=not built["processed_bytes"]
            )
            hot = {
                HOT_TELEMETRY: {
                    "rows": loaded.rows,
                    "checksum": str(loaded.checksum),
                    "loaded_at": loaded.loaded_at.isoformat(),
                    "duration_s": round(loaded.duration_s, 3),
                },
                HOT_METRICS: {"rows": loaded.metrics_rows},
            }
        return HourOutcome(
            metadata={PROCESSED: _metadata(built, path), **hot},
            checks={PROCESSED: bool(built["conserved"])},
        )

    yield from _partition_runs(context, publish)


def _known_vehicle_ids(warehouse: WarehouseResource) -> list[str]:
    """Every vehicle fleet-core ever had (deleted ones too: their old telemetry is real)."""
    from atlasmesh.fleet_core.extract import DATABASE

    client = warehouse.client()
    exists = client.command(f"EXISTS TABLE {DATABASE}.vehicles")
    if not int(exists):
        raise dg.Failure(
            "fleet_core.vehicles is not in the warehouse yet: materialise the fleet_core "
            "assets (or run `atlasmesh fleet-core extract`) before ingesting telemetry, "
            "otherwise every record would be dead-lettered as UNKNOWN_VEHICLE"
        )
    result = client.query(f"SELECT DISTINCT toString(vehicle_id) FROM {DATABASE}.vehicles")
    return [row[0] for row in result.result_rows]


def _counts(metadata: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metadata.items() if isinstance(v, int | str) and k != "path"}


def _metadata(meta: dict[str, Any], path: str) -> dict[str, Any]:
    """Counts as numbers, reason breakdowns as JSON, and a link-friendly path."""
    out: dict[str, Any] = {"path": dg.MetadataValue.path(path)}
    for name, value in meta.items():
        out[name] = dg.MetadataValue.json(value) if isinstance(value, dict | list) else value
    return out
