"""Schedules: the operational source is polled, the marts follow ingestion hourly."""

from datetime import datetime, timedelta

import dagster as dg

from orchestration.jobs import build_marts_job, extract_fleet_core_job

# Every 15 minutes keeps fleet-core copies fresher than the 10-minute extraction overlap
# plus one run, so a late commit is always re-read.
extract_fleet_core_schedule = dg.ScheduleDefinition(
    job=extract_fleet_core_job,
    cron_schedule="*/15 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)

# An event hour settles 2 h after it ends (PARTITION_SETTLE_DELAY, docs/telemetry_pipeline.md);
# one more hour of margin for the sensor-driven publish runs. Until then the day of
# "tick - 3 h" is still yesterday, so yesterday's partition is rebuilt once its last hour
# has settled, and today's from 03:20 on.
MARTS_LAG = timedelta(hours=3)


def marts_partition_for(tick: datetime) -> str:
    """The daily partition a marts run at `tick` rebuilds: the day of `tick - MARTS_LAG`."""
    return (tick - MARTS_LAG).date().isoformat()


@dg.schedule(
    job=build_marts_job,
    cron_schedule="20 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def marts_after_ingestion(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Rebuild the marts hourly: today's incremental partition (yesterday's until it settles)."""
    tick = context.scheduled_execution_time
    partition = marts_partition_for(tick)
    return dg.RunRequest(partition_key=partition, run_key=f"{partition}@{tick:%Y-%m-%dT%H}")


SCHEDULES = [extract_fleet_core_schedule, marts_after_ingestion]
