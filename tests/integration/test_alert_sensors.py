"""The alert sensors: a failed check raises one alert, a later pass resolves it; runs too."""

from __future__ import annotations

import dagster as dg
import pytest

from atlasmesh.alerts import list_alerts
from atlasmesh.warehouse import service
from orchestration.alerts import (
    check_evaluation_alerts,
    freshness_targets,
    run_failure_alerts,
    telemetry_rule_alerts,
)
from orchestration.resources import WarehouseResource
from tests.fixtures.warehouse import start_service

pytestmark = pytest.mark.integration

GOOD = {"value": True}


@dg.asset(partitions_def=dg.StaticPartitionsDefinition(["a", "b"]))
def gated() -> None:
    """An asset whose blocking check passes or fails as the test says."""


@dg.asset_check(asset=gated, blocking=True)
def rows_conform() -> dg.AssetCheckResult:
    """Fails while GOOD says so."""
    return dg.AssetCheckResult(passed=GOOD["value"], description="3 rows out of range")


@dg.asset
def broken() -> None:
    """Always fails."""
    raise RuntimeError("the source is unreachable")


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    svc = start_service(tmp_path_factory.mktemp("alert_sensors"))
    yield WarehouseResource(url=svc.url, home=str(svc.home), port=svc.port)
    service.stop(svc.settings, timeout=30)


def _tick(sensor, instance, warehouse, cursor=None):
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"warehouse": warehouse}
    )
    result = sensor(context)
    return context.cursor, result


def test_failed_check_raises_one_alert_and_a_pass_resolves_it(warehouse):
    instance = dg.DagsterInstance.ephemeral()
    client = warehouse.client()
    GOOD["value"] = False
    cursor = None
    for _ in range(2):  # the same failure in two runs is one alert
        dg.materialize(
            [gated, rows_conform], instance=instance, partition_key="a", raise_on_error=False
        )
        cursor, _ = _tick(check_evaluation_alerts, instance, warehouse, cursor)
    alerts = list_alerts(client, "open", alert_type="quality_gate_failed")
    assert len(alerts) == 1
    alert = alerts[0]
    assert alert.severity == "critical"
    assert "rows_conform" in alert.message and "partition a" in alert.message
    assert alert.occurrences == 2
    assert alert.runbook

    # Nothing new: the cursor keeps the sensor from raising again.
    _, result = _tick(check_evaluation_alerts, instance, warehouse, cursor)
    assert isinstance(result, dg.SkipReason) and "no new" in result.skip_message
    assert list_alerts(client, "open", alert_type="quality_gate_failed")[0].occurrences == 2

    GOOD["value"] = True
    dg.materialize([gated, rows_conform], instance=instance, partition_key="a")
    _tick(check_evaluation_alerts, instance, warehouse, cursor)
    assert list_alerts(client, "open", alert_type="quality_gate_failed") == []
    (resolved,) = list_alerts(client, "resolved", alert_type="quality_gate_failed")
    assert resolved.alert_id == alert.alert_id
    assert resolved.resolved_by == "auto:quality_gates"


def test_failed_run_raises_a_run_failed_alert(warehouse):
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([broken], instance=instance, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE)
    context = dg.build_run_status_sensor_context(
        sensor_name="run_failure_alerts",
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        dagster_event=failure,
        resources={"warehouse": warehouse},
    ).for_run_failure()
    run_failure_alerts(context)
    (alert,) = list_alerts(warehouse.client(), "open", alert_type="run_failed")
    assert alert.dagster_run_id == result.run_id
    assert alert.severity == "critical"


def test_stale_or_missing_telemetry_and_marts_raise_freshness_alerts(warehouse):
    client = warehouse.client()
    instance = dg.DagsterInstance.ephemeral()
    _tick(telemetry_rule_alerts, instance, warehouse)
    stale = {
        a.context["target"] for a in list_alerts(client, "open", alert_type="freshness_missed")
    }
    assert stale == {t.name for t in freshness_targets()}

    # Today's vehicle-days arrive: that mart's alert resolves itself, the others stay open.
    client.command("CREATE DATABASE IF NOT EXISTS analytics")
    client.command(
        "CREATE TABLE analytics.fct_vehicle_days (activity_date Date) ENGINE = MergeTree ORDER BY ()"
    )
    client.command("INSERT INTO analytics.fct_vehicle_days VALUES (today())")
    _tick(telemetry_rule_alerts, instance, warehouse)
    still = {
        a.context["target"] for a in list_alerts(client, "open", alert_type="freshness_missed")
    }
    assert still == stale - {"analytics.fct_vehicle_days"}
