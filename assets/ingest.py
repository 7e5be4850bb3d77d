"""Ingest layer: landing telemetry validated, staged, published to the lake and ClickHouse."""

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
from dagster._core.definitions.asset_checks.asset_check_evaluation import AssetCheckEvaluation

from assets.fleet_core import TABLE_KEYS
from assets.quality import TELEMETRY_GATE, TelemetryGate, Verdict, telemetry_gate_spec
from assets.sources import LANDING_TELEMETRY
from orchestration.partitions import hourly
from orchestration.resources import LakeResource, WarehouseResource

STAGED = dg.AssetKey(["staging", "vehicle_telemetry"])
PROCESSED = dg.AssetKey(["processed", "vehicle_telemetry"])
HOT_TELEMETRY = dg.AssetKey(["atlasmesh_analytics", "vehicle_telemetry"])
HOT_METRICS = dg.AssetKey(["atlasmesh_analytics", "vehicle_metrics_hourly"])

CONSERVED = "received_equals_accepted_duplicates_dead_lettered"
GATE = dg.AssetCheckKey(HOT_TELEMETRY, TELEMETRY_GATE)
HOUR_KEY_FORMAT = "%Y-%m-%d-%H:%M"
# A backfill hands its hours to the step's work a day at a time: the hot path loads a
# batch through one stage (a small hour's load is mostly fixed cost), yet each hour is
# still swapped, recorded and checked on its own.
BATCH_HOURS = 24
# Metadata of a range run's one result per check: the hours that failed (each hour also has
# its own evaluation, which is what alerts follow).
FAILED_PARTITIONS = "failed_partitions"

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
    """What one hour of work produced: metadata per asset and a verdict per check."""

    metadata: dict[dg.AssetKey, dict[str, Any]]
    checks: dict[dg.AssetCheckKey, Verdict] = field(default_factory=dict)


def _partition_runs(
    context: dg.AssetExecutionContext,
    work: Callable[[list[datetime]], list[HourOutcome]],
    gate: TelemetryGate | None = None,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult | AssetCheckEvaluation]:
    """Run `work` over batches of hours so that every partition gets its own metadata and checks.

    A sensor's run covers one hour: its results are ordinary outputs, so downstream steps
    in the same run go ahead unless a blocking check failed. A backfill covers many hours in
    one process (single-run policy): each hour is then recorded as its own partition
    materialisation and check evaluation, never as one aggregate smeared over the range, and
    each check adds one result for the range that fails if any hour failed. What the run did
    not select but the step did anyway (the rest of one swap, its gate) is recorded as
    events; a failed blocking evaluation among them still fails the step. The hours `work`
    hands to `gate` are judged whenever a batch is due and at the end; if the step fails,
    the hours it already loaded are judged before the error is raised.
    """
    hours = hours_of(context)
    # A one-hour range (start = end) has no partition key for Dagster to put on outputs.
    single = len(hours) == 1 and context.has_partition_key
    failed: dict[dg.AssetCheckKey, list[str]] = {}

    def report(
        hour: datetime, checks: dict[dg.AssetCheckKey, Verdict]
    ) -> Iterator[dg.AssetCheckResult | AssetCheckEvaluation]:
        partition = hour.strftime(HOUR_KEY_FORMAT)
        for key, verdict in checks.items():
            if not verdict.passed:
                failed.setdefault(key, []).append(partition)
            if single and key in context.selected_asset_check_keys:
                yield dg.AssetCheckResult(
                    asset_key=key.asset_key,
                    check_name=key.name,
                    passed=verdict.passed,
                    metadata=verdict.metadata,
                    description=verdict.description,
                )
                continue
            # Yielded, not logged: Dagster fails the step on a failed blocking evaluation it
            # sees go by, and records it even when the step raises right after.
            yield AssetCheckEvaluation(
                asset_key=key.asset_key,
                check_name=key.name,
                passed=verdict.passed,
                partition=partition,
                metadata=verdict.metadata,
                description=verdict.description,
                blocking=True,
            )

    def judge() -> Iterator[dg.AssetCheckResult | AssetCheckEvaluation]:
        for hour, verdict in gate.judge() if gate is not None else []:
            yield from report(hour, {GATE: verdict})

    try:
        for first in range(0, len(hours), BATCH_HOURS):
            batch = hours[first : first + BATCH_HOURS]
            for hour, outcome in zip(batch, work(batch), strict=True):
                partition = hour.strftime(HOUR_KEY_FORMAT)
                for key, metadata in outcome.metadata.items():
                    if single and key in context.selected_asset_keys:
                        yield dg.MaterializeResult(asset_key=key, metadata=metadata)
                    else:
                        context.log_event(
                            dg.AssetMaterialization(key, partition=partition, metadata=metadata)
                        )
                yield from report(hour, outcome.checks)
                if gate is not None and gate.due():
                    yield from judge()
            if not single:
                context.log.info(f"{first + len(batch)}/{len(hours)} hours done")
        yield from judge()
    except Exception:
        # Hours already in the hot path are judged before the step fails, so none of them
        # stays there ungated.
        if gate is not None and gate.pending:
            try:
                yield from judge()
            except Exception as error:
                context.log.error(f"the hours loaded before the failure were not gated: {error}")
        raise
    if not single:
        for key in sorted(context.selected_asset_check_keys, key=str):
            names = failed.get(key, [])
            yield dg.AssetCheckResult(
                asset_key=key.asset_key,
                check_name=key.name,
                passed=not names,
                metadata={"hours": len(hours), FAILED_PARTITIONS: ", ".join(names) or "none"},
                description=f"{len(names)} of {len(hours)} hours failed"
                if names
                else f"all {len(hours)} hours passed",
            )


def _conserved(metadata: dict[str, Any], conserved: bool) -> Verdict:
    return Verdict(passed=conserved, metadata=_counts(metadata))


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
        metadata = _metadata(meta, path)
        return HourOutcome(
            {STAGED: metadata},
            {dg.AssetCheckKey(STAGED, CONSERVED): _conserved(metadata, bool(meta["conserved"]))},
        )

    yield from _partition_runs(context, lambda hours: [stage(hour) for hour in hours])


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
        ),
        telemetry_gate_spec(HOT_TELEMETRY),
    ],
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool="warehouse",
    # So that the gate can run alone, re-gating hours without publishing them; a run that
    # selects any asset still publishes and gates all of them (see _publishes).
    can_subset=True,
)
def published_telemetry(
    context: dg.AssetExecutionContext, lake: LakeResource, warehouse: WarehouseResource
):
    """Rebuild each event hour from every delivery staged for it, swap it into ClickHouse, gate it."""
    from atlasmesh.telemetry.pipeline import PROCESSED_PREFIX, build_event_hour
    from atlasmesh.telemetry.validate import partition_path
    from atlasmesh.warehouse.telemetry import RETENTION_DAYS, ensure_schema, load_hours_from_lake

    publishing = _publishes(context)
    the_lake, client = lake.lake(), warehouse.client()
    ensure_schema(client)
    gate = TelemetryGate(
        warehouse.settings(), client, the_lake, run_id=context.run.run_id, log=context.log
    )

    def too_old(hour: datetime) -> bool:
        # The hot table keeps 90 days (seed §9.2): its TTL would drop an older hour again at
        # once, so a backfill of old history stops at the lake and the hot path holds nothing.
        return hour < datetime.now(UTC) - timedelta(days=RETENTION_DAYS)

    def regate(hours: list[datetime]) -> list[HourOutcome]:
        for hour in hours:
            gate.add(hour, 0 if too_old(hour) else None)
        return [HourOutcome(metadata={}) for _ in hours]

    def publish(hours: list[datetime]) -> list[HourOutcome]:
        built = {hour: build_event_hour(the_lake, hour).metadata() for hour in hours}
        hot_hours = [hour for hour in hours if not too_old(hour)]
        # Loaded from what was just published, never from staging: the warehouse and the
        # lake hold the same rows. An hour with nothing accepted has no processed file and
        # clears the warehouse hour.
        # If the server fails between two hours' swaps, the swapped ones are not in the
        # gate yet: the step fails (and alerts), and its retry re-publishes and gates them.
        loads = load_hours_from_lake(
            client,
            the_lake,
            hot_hours,
            missing_ok={hour for hour in hot_hours if not built[hour]["processed_bytes"]},
        )
        loaded = dict(zip(hot_hours, loads, strict=True))
        outcomes = []
        for hour in hours:
            if hour in loaded:
                load = loaded[hour]
                hot = {
                    HOT_TELEMETRY: {
                        "rows": load.rows,
                        "checksum": str(load.checksum),
                        "loaded_at": load.loaded_at.isoformat(),
                        "duration_s": round(load.duration_s, 3),
                    },
                    HOT_METRICS: {"rows": load.metrics_rows},
                }
                # Judged against what processing published for the hour.
                gate.add(hour, int(built[hour]["accepted"]))
            else:
                skipped = {
                    "rows": 0,
                    "skipped": f"older than the {RETENTION_DAYS}-day hot retention",
                }
                hot = {HOT_TELEMETRY: skipped, HOT_METRICS: skipped}
                gate.add(hour, 0)
            path = the_lake.uri(f"{partition_path(PROCESSED_PREFIX, hour)}/")
            metadata = _metadata(built[hour], path)
            conserved = _conserved(metadata, bool(built[hour]["conserved"]))
            outcomes.append(
                HourOutcome(
                    metadata={PROCESSED: metadata, **hot},
                    checks={dg.AssetCheckKey(PROCESSED, CONSERVED): conserved},
                )
            )
        return outcomes

    yield from _partition_runs(context, publish if publishing else regate, gate)


def _publishes(context: dg.AssetExecutionContext) -> bool:
    """False to re-gate hours (only the gate selected), True to publish them.

    Publishing builds the lake hour and swaps the hot path and its metrics in one go, and
    gates it: whatever part of the step a run selects, all of it runs, so no hour reaches
    the hot path ungated.
    """
    if context.selected_asset_keys:
        return True
    if set(context.selected_asset_check_keys) == {GATE}:
        return False
    raise dg.Failure(
        f"{CONSERVED} is checked when an hour is published: select the publish step's "
        f"assets, or only {TELEMETRY_GATE} to re-gate hours without publishing them"
    )


def _known_vehicle_ids(warehouse: WarehouseResource) -> list[str]:
    """Every vehicle fleet-core ever had (deleted ones too: their old telemetry is real)."""
    from atlasmesh.fleet_core.extract import DATABASE

    client = warehouse.client()
    exists = client.command(f"EXISTS TABLE {DATABASE}.vehicles")
    known = []
    if int(exists):
        result = client.query(f"SELECT DISTINCT toString(vehicle_id) FROM {DATABASE}.vehicles")
        known = [row[0] for row in result.result_rows]
    # An empty table counts as missing: a dbt build creates the source tables empty before
    # any extraction, and no fleet has telemetry without vehicles.
    if not known:
        raise dg.Failure(
            "fleet_core.vehicles holds no vehicles yet: materialise the fleet_core assets (or "
            "run `atlasmesh fleet-core extract`) before ingesting telemetry, otherwise every "
            "record would be dead-lettered as UNKNOWN_VEHICLE"
        )
    return known


def _counts(metadata: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metadata.items() if isinstance(v, int | str) and k != "path"}


def _metadata(meta: dict[str, Any], path: str) -> dict[str, Any]:
    """Counts as numbers, reason breakdowns as JSON, and a link-friendly path."""
    out: dict[str, Any] = {"path": dg.MetadataValue.path(path)}
    for name, value in meta.items():
        out[name] = dg.MetadataValue.json(value) if isinstance(value, dict | list) else value
    return out
