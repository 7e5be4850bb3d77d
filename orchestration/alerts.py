"""Sensors that turn failed runs, failed checks, telemetry rules and stale data into alerts.

Dagster's run-failure sensors miss a failed asset check (the run still succeeds), so
check evaluations are watched directly in the event log. The alert store, its dedup by
fingerprint and the webhook outbox live in `atlasmesh.alerts`; these sensors only feed it.
"""

import warnings
from datetime import UTC, datetime, timedelta

import dagster as dg

from orchestration.resources import PlatformResource, WarehouseResource

# Delivery within 60 s of the failing evaluation: a 30 s sensor interval leaves room for the
# daemon's own tick latency.
DELIVERY_INTERVAL_S = 30
EVALUATION_INTERVAL_S = 30
RULES_INTERVAL_S = 300
CHECK_EVENTS_PER_TICK = 500
# A day's marts are built once the day has closed and its last hours have settled, so the
# newest day in a daily fact is normally yesterday: older than two days means the builds stopped.
MART_MAX_AGE = timedelta(days=2)
DAILY_MARTS = ("fct_vehicle_days", "fct_fleet_days")


def freshness_targets() -> list:
    """The tables whose newest data must stay recent: hot telemetry and the daily marts."""
    from atlasmesh.alerts import FreshnessTarget, telemetry_freshness_target
    from atlasmesh.analytics import DEFAULT_SCHEMA

    marts = [
        FreshnessTarget(
            name=f"{DEFAULT_SCHEMA}.{table}",
            database=DEFAULT_SCHEMA,
            table=table,
            column="activity_date",
            max_age=MART_MAX_AGE,
        )
        for table in DAILY_MARTS
    ]
    return [telemetry_freshness_target(), *marts]


def _key(asset_key: dg.AssetKey) -> str:
    return asset_key.to_user_string()


@dg.run_failure_sensor(
    name="run_failure_alerts",
    minimum_interval_seconds=EVALUATION_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    monitor_all_code_locations=True,
)
def run_failure_alerts(context: dg.RunFailureSensorContext, warehouse: WarehouseResource):
    """Raise one `run_failed` alert per job and partition, however many runs fail."""
    from atlasmesh.alerts import raise_alert, run_failed

    run = context.dagster_run
    error = context.failure_event.message or ""
    alert = raise_alert(
        warehouse.client(),
        run_failed(
            job_name=run.job_name,
            dagster_run_id=run.run_id,
            error=error,
            partition=run.tags.get("dagster/partition"),
        ),
    )
    context.log.info(
        f"alert {alert.alert_id} ({alert.occurrences} occurrences) for run {run.run_id}"
    )


@dg.run_status_sensor(
    name="run_recovery_alerts",
    run_status=dg.DagsterRunStatus.SUCCESS,
    minimum_interval_seconds=EVALUATION_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    monitor_all_code_locations=True,
)
def run_recovery_alerts(context: dg.RunStatusSensorContext, warehouse: WarehouseResource):
    """Resolve the open `run_failed` alert of a job and partition once a run of it succeeds."""
    from atlasmesh.alerts import resolve_fingerprint, run_failed

    run = context.dagster_run
    spec = run_failed(
        job_name=run.job_name,
        dagster_run_id=run.run_id,
        partition=run.tags.get("dagster/partition"),
    )
    resolve_fingerprint(
        warehouse.client(),
        spec.fingerprint,
        who="auto:runs",
        note=f"run {run.run_id} succeeded",
    )


@dg.sensor(
    minimum_interval_seconds=EVALUATION_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def check_evaluation_alerts(context: dg.SensorEvaluationContext, warehouse: WarehouseResource):
    """Raise an alert for every failed asset check and resolve it when the check passes again."""
    from assets.ingest import FAILED_PARTITIONS
    from atlasmesh.alerts import (
        list_alerts,
        quality_gate_failed,
        raise_alerts,
        resolve_fingerprint,
    )

    after = int(context.cursor) if context.cursor else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # get_event_records is the only query for check events
        records = context.instance.get_event_records(
            dg.EventRecordsFilter(
                event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION, after_cursor=after
            ),
            limit=CHECK_EVENTS_PER_TICK,
            ascending=True,
        )
    if not records:
        return dg.SkipReason("no new check evaluations")
    # The latest evaluation of a check on a partition decides: failed then passed is resolved.
    latest = {}
    run_partitions: dict[str, str | None] = {}
    for record in records:
        evaluation = record.event_log_entry.dagster_event.event_specific_data
        partition = evaluation.partition
        if partition is None and FAILED_PARTITIONS in evaluation.metadata:
            # A range run's one result for the whole range: each of its hours has its own
            # evaluation, and an alert per failed hour is what on-call acts on.
            continue
        if partition is None:
            # A check run as its own step does not carry the partition: its run does.
            if record.run_id not in run_partitions:
                run = context.instance.get_run_by_id(record.run_id)
                run_partitions[record.run_id] = run.tags.get("dagster/partition") if run else None
            partition = run_partitions[record.run_id]
        spec = quality_gate_failed(
            asset_key=_key(evaluation.asset_key),
            check_name=evaluation.check_name,
            partition=partition,
            description=evaluation.description or "",
            dagster_run_id=record.run_id,
            blocking=bool(evaluation.blocking),
        )
        latest[spec.fingerprint] = (spec, evaluation.passed)
    client = warehouse.client()
    failing = [spec for spec, passed in latest.values() if not passed]
    raise_alerts(client, failing)
    # Only checks with an open alert need resolving: one query instead of one per pass.
    open_now = {
        a.fingerprint
        for a in list_alerts(client, "open", alert_type="quality_gate_failed", limit=10_000)
    }
    resolved = sum(
        resolve_fingerprint(client, fp, who="auto:quality_gates", note="the check passed")
        is not None
        for fp, (_, passed) in latest.items()
        if passed and fp in open_now
    )
    context.update_cursor(str(records[-1].storage_id))
    return dg.SkipReason(
        f"{len(records)} check evaluations: {len(failing)} failing, {resolved} alerts resolved"
    )


@dg.sensor(
    minimum_interval_seconds=RULES_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def telemetry_rule_alerts(context: dg.SensorEvaluationContext, warehouse: WarehouseResource):
    """Evaluate the operational telemetry rules and the freshness of telemetry and marts."""
    from atlasmesh.alerts import check_freshness, check_telemetry_rules
    from atlasmesh.warehouse.telemetry import DATABASE, TELEMETRY_TABLE

    client = warehouse.client()
    now = datetime.now(UTC)
    outcomes = [check_freshness(client, now, freshness_targets())]
    # Before the first load there is nothing to judge: freshness already reports the gap.
    if int(client.command(f"EXISTS TABLE `{DATABASE}`.`{TELEMETRY_TABLE}`")):
        outcomes.append(check_telemetry_rules(client, now))
    counts = {
        kind: sum(len(getattr(o, kind)) for o in outcomes)
        for kind in ("raised", "repeated", "resolved")
    }
    return dg.SkipReason(f"telemetry rules and freshness evaluated: {counts}")


@dg.sensor(
    minimum_interval_seconds=DELIVERY_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def alert_delivery(
    context: dg.SensorEvaluationContext, warehouse: WarehouseResource, platform: PlatformResource
):
    """Send due alert notifications to the webhook; a failed send is retried with backoff."""
    from atlasmesh.alerts import deliver_pending

    report = deliver_pending(warehouse.client(), platform.settings())
    return dg.SkipReason(f"alert delivery: {report}")


ALERT_SENSORS = [
    run_failure_alerts,
    run_recovery_alerts,
    check_evaluation_alerts,
    telemetry_rule_alerts,
    alert_delivery,
]
