"""Sensors with cursors: new landing files request their arrival hours, staged hours their event hours."""

import dagster as dg

from assets.ingest import HOUR_KEY_FORMAT, STAGED
from orchestration.jobs import publish_telemetry_job, stage_telemetry_job
from orchestration.resources import LakeResource

# A tick's warnings stay readable when a whole tree lands in the wrong place.
MAX_MISPLACED_LOGGED = 20


@dg.sensor(
    job=stage_telemetry_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def new_landing_files(context: dg.SensorEvaluationContext, lake: LakeResource):
    """Request the arrival hours that received new or changed landing files (late ones too)."""
    from atlasmesh.telemetry.pipeline import list_arrival_hours, printable_path

    changes = list_arrival_hours(lake.lake(), context.cursor)
    # No stage reads these files: say so once (the cursor moves past them), never drop them quietly.
    for entry, why in changes.misplaced[:MAX_MISPLACED_LOGGED]:
        context.log.warning(f"landing file {printable_path(entry.path)} is not ingested: {why}")
    if len(changes.misplaced) > MAX_MISPLACED_LOGGED:
        context.log.warning(
            f"{len(changes.misplaced) - MAX_MISPLACED_LOGGED} more misplaced landing files are "
            "not ingested (list them with atlasmesh.telemetry.pipeline.list_arrival_hours)"
        )
    requests = [
        dg.RunRequest(
            partition_key=hour.strftime(HOUR_KEY_FORMAT),
            # A re-delivery into an already staged hour is a new run, not a skipped duplicate.
            run_key=f"{hour:%Y-%m-%dT%H}:{changes.cursor}",
        )
        for hour in changes.arrival_hours
    ]
    return dg.SensorResult(run_requests=requests, cursor=changes.cursor)


@dg.sensor(
    job=publish_telemetry_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def staged_event_hours(context: dg.SensorEvaluationContext):
    """Request a rebuild of every event hour a newly staged arrival hour wrote or emptied."""
    result = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=STAGED,
            after_storage_id=int(context.cursor) if context.cursor else None,
        ),
        limit=500,
        ascending=True,
    )
    hours: set[str] = set()
    last = int(context.cursor) if context.cursor else 0
    for record in result.records:
        metadata = record.asset_materialization.metadata if record.asset_materialization else {}
        for name in ("event_hours", "removed_event_hours"):
            value = metadata.get(name)
            hours.update(value.value if value is not None else [])
        last = max(last, record.storage_id)
    requests = [
        dg.RunRequest(partition_key=_partition_key(hour), run_key=f"{hour}:{last}")
        for hour in sorted(hours)
    ]
    return dg.SensorResult(run_requests=requests, cursor=str(last))


def _partition_key(iso_hour: str) -> str:
    # Manifests carry ISO hours (2026-11-28T07:00:00Z); partitions use Dagster's hourly key.
    return f"{iso_hour[:10]}-{iso_hour[11:16]}"


SENSORS = [new_landing_files, staged_event_hours]
