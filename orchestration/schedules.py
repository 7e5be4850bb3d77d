"""Schedules: the operational source is polled; telemetry is driven by sensors instead."""

import dagster as dg

from orchestration.jobs import extract_fleet_core_job

# Every 15 minutes keeps fleet-core copies fresher than the 10-minute extraction overlap
# plus one run, so a late commit is always re-read.
extract_fleet_core_schedule = dg.ScheduleDefinition(
    job=extract_fleet_core_job,
    cron_schedule="*/15 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)

SCHEDULES = [extract_fleet_core_schedule]
