"""The telemetry gate in Dagster: a corrupted hour is blocked and quarantined, a clean one passes.

The gate is a check of the publish step, so it judges every hour that step loads: in a
sensor's one-hour run and in a backfill's range run alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from assets.fleet_core import fleet_core_tables
from assets.ingest import (
    CONSERVED,
    GATE,
    HOT_METRICS,
    HOT_TELEMETRY,
    PROCESSED,
    STAGED,
    published_telemetry,
    staged_telemetry,
)
from assets.quality import TELEMETRY_GATE
from assets.sources import fleet_simulation
from atlasmesh.alerts import list_alerts
from atlasmesh.lake import Lake
from atlasmesh.simulator.incidents import inject_gps_jumps
from atlasmesh.warehouse.quarantine import quarantined_rows
from orchestration.alerts import check_evaluation_alerts
from tests.fixtures.platform import simulated_day

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(600),
    pytest.mark.xdist_group("quality_gate"),
]

DAY = (datetime.now(UTC) - timedelta(days=3)).date()
CLEAN, BAD = (datetime(DAY.year, DAY.month, DAY.day, h, tzinfo=UTC) for h in (6, 14))
DOWNSTREAM = dg.AssetKey(["marts", "downstream_of_telemetry"])


@dg.asset(key=DOWNSTREAM, deps=[HOT_TELEMETRY], partitions_def=published_telemetry.partitions_def)
def downstream_of_telemetry() -> None:
    """Stands for the marts: it must not run on a failed hour."""


ASSETS = [
    fleet_simulation,
    fleet_core_tables,
    staged_telemetry,
    published_telemetry,
    downstream_of_telemetry,
]


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A day simulated and extracted; the BAD hour's deliveries carry a GPS fault; both staged.

    The hours are far apart: a gateway batch window reaches ten minutes back, so the fault
    also touches the end of the event hour before BAD.
    """
    home = tmp_path_factory.mktemp("gate_home")
    # Ephemeral: its event log answers the alert sensor's query for check evaluations.
    with (
        dg.DagsterInstance.ephemeral() as instance,
        simulated_day(home, str(DAY), instance, fault_rate=0.0) as (settings, resources),
    ):
        job = dg.Definitions(
            assets=ASSETS, resources=resources
        ).resolve_implicit_global_asset_job_def()
        fault = inject_gps_jumps(Lake.from_settings(settings), BAD)
        assert fault.lines > 100
        for hour in (CLEAN, BAD, BAD + timedelta(hours=1), CLEAN + timedelta(hours=1)):
            staged = job.get_subset(asset_selection={STAGED}).execute_in_process(
                instance=instance, partition_key=f"{hour:%Y-%m-%d-%H:%M}"
            )
            assert staged.success
        yield {"job": job, "instance": instance, "settings": settings, "resources": resources}


def _key(hour: datetime) -> str:
    return f"{hour:%Y-%m-%d-%H:%M}"


def _publish(
    platform: dict, first: datetime, last: datetime | None = None, *, publish: bool = True
) -> dg.ExecuteInProcessResult:
    """A one-hour run like the sensor's, or a range run like a backfill's; or the gate alone."""
    subset = platform["job"].get_subset(
        asset_selection={PROCESSED, HOT_TELEMETRY, HOT_METRICS, DOWNSTREAM} if publish else set(),
        asset_check_selection={GATE, dg.AssetCheckKey(PROCESSED, CONSERVED)} if publish else {GATE},
    )
    if last is None:
        return subset.execute_in_process(
            instance=platform["instance"], partition_key=_key(first), raise_on_error=False
        )
    return subset.execute_in_process(
        instance=platform["instance"],
        tags={
            ASSET_PARTITION_RANGE_START_TAG: _key(first),
            ASSET_PARTITION_RANGE_END_TAG: _key(last),
        },
        raise_on_error=False,
    )


def _gates(result: dg.ExecuteInProcessResult) -> list:
    return [
        e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
        and e.asset_check_evaluation_data.check_name == TELEMETRY_GATE
    ]


def _gate(result: dg.ExecuteInProcessResult):
    (evaluation,) = _gates(result)
    return evaluation


def _failed_steps(result: dg.ExecuteInProcessResult) -> dict[str, str]:
    return {
        e.step_key: str(e.step_failure_data.error.message if e.step_failure_data.error else "")
        for e in result.all_events
        if e.event_type_value == "STEP_FAILURE"
    }


def _hot_rows(client, hour: datetime) -> int:
    return int(
        client.command(
            "SELECT count() FROM atlasmesh_analytics.vehicle_telemetry "
            f"WHERE toStartOfHour(recorded_at) = toDateTime('{hour:%Y-%m-%d %H:%M:%S}', 'UTC')"
        )
    )


def _score(client, hour: datetime) -> tuple[float, list[str]]:
    return client.query(
        "SELECT score, failed_dimensions FROM ops.quality_scores_latest WHERE dataset = 'vehicle_telemetry' "
        "AND partition = {p:String}",
        parameters={"p": f"{hour:%Y-%m-%d-%H:%M}"},
    ).result_rows[0]


def test_a_clean_hour_passes_and_downstream_runs(platform):
    result = _publish(platform, CLEAN)
    gate = _gate(result)
    assert result.success, gate.description
    assert gate.passed
    assert gate.metadata["failed_rules"].value == "none"
    assert DOWNSTREAM in {e.asset_key for e in result.get_asset_materialization_events()}
    client = platform["resources"]["warehouse"].client()
    assert _hot_rows(client, CLEAN) > 0
    score, failed = _score(client, CLEAN)
    # A backfilled hour arrives days late, so timeliness is the one dimension it may fail.
    assert set(failed) <= {"timeliness"} and score > 80


def test_a_corrupted_hour_is_blocked_quarantined_and_scored(platform):
    result = _publish(platform, BAD)
    assert not result.success  # the blocking check failed the run
    assert "blocking asset check" in _failed_steps(result)["published_telemetry"]
    gate = _gate(result)
    assert not gate.passed
    assert "speed" in gate.metadata["failed_rules"].value
    assert gate.metadata["quarantined_rows"].value > 0
    # Blocked in the same run: the downstream asset never materialised.
    assert DOWNSTREAM not in {e.asset_key for e in result.get_asset_materialization_events()}
    # And for later runs: the hour left the hot path for the quarantine table.
    client = platform["resources"]["warehouse"].client()
    assert _hot_rows(client, BAD) == 0
    assert quarantined_rows(client, BAD) == gate.metadata["quarantined_rows"].value
    metrics_rows = client.command(
        "SELECT count() FROM atlasmesh_analytics.vehicle_metrics_hourly "
        f"WHERE hour = toDateTime('{BAD:%Y-%m-%d %H:%M:%S}', 'UTC')"
    )
    assert int(metrics_rows) == 0
    score, failed = _score(client, BAD)
    assert "accuracy" in failed
    # Published here too: xdist does not promise the clean test ran first in this module.
    assert _publish(platform, CLEAN).success
    assert score < _score(client, CLEAN)[0]


def test_a_range_run_gates_every_hour_and_blocks_on_the_bad_one(platform):
    # A backfill of three event hours in one run (single-run policy): the gate judges each.
    hours = [BAD - timedelta(hours=1), BAD, BAD + timedelta(hours=1)]
    client = platform["resources"]["warehouse"].client()
    result = _publish(platform, hours[0], hours[-1])
    assert not result.success
    assert "blocking asset check" in _failed_steps(result)["published_telemetry"]
    evaluations = _gates(result)
    per_hour = {e.partition: e for e in evaluations if e.partition is not None}
    assert sorted(per_hour) == [_key(h) for h in hours]
    # BAD fails; the hour after it is clean. The hour before may carry the fault's tail
    # (10-minute gateway batches reach back into it): whatever its verdict, it is enforced.
    assert not per_hour[_key(BAD)].passed and per_hour[_key(BAD + timedelta(hours=1))].passed
    assert "speed" in per_hour[_key(BAD)].metadata["failed_rules"].value
    for hour in hours:
        evaluation = per_hour[_key(hour)]
        assert evaluation.blocking
        quarantined = evaluation.metadata["quarantined_rows"].value
        if evaluation.passed:
            assert quarantined == 0 and _hot_rows(client, hour) > 0
        else:
            assert quarantined > 0 and _hot_rows(client, hour) == 0
            assert quarantined_rows(client, hour) == quarantined
    # One result for the range, listing the failed hours, and blocking like each of them.
    (aggregate,) = [e for e in evaluations if e.partition is None]
    assert not aggregate.passed and _key(BAD) in aggregate.metadata["failed_partitions"].value
    assert DOWNSTREAM not in {e.asset_key for e in result.get_asset_materialization_events()}
    # Every hour's materialisation is recorded on its own partition, bad ones included.
    hot = {
        e.partition
        for e in result.get_asset_materialization_events()
        if e.asset_key == HOT_TELEMETRY
    }
    assert hot == {_key(h) for h in hours}
    scored = client.query(
        "SELECT partition FROM ops.quality_scores WHERE dataset = 'vehicle_telemetry' "
        "AND run_id = {r:String} ORDER BY partition",
        parameters={"r": result.run_id},
    ).result_rows
    assert [p for (p,) in scored] == [_key(h) for h in hours]

    # The alert sensor raises one alert per failed hour, none for the range's aggregate.
    context = dg.build_sensor_context(
        instance=platform["instance"], resources={"warehouse": platform["resources"]["warehouse"]}
    )
    check_evaluation_alerts(context)
    alerted = {
        a.context.get("partition")
        for a in list_alerts(client, "open", alert_type="quality_gate_failed")
        if a.context.get("check_name") == TELEMETRY_GATE
    }
    assert None not in alerted
    failed = {p for p, e in per_hour.items() if not e.passed}
    assert failed <= alerted
    assert all(
        a.severity == "critical"
        for a in list_alerts(client, "open", alert_type="quality_gate_failed")
        if a.context.get("partition") in failed
    )
    assert not {p for p, e in per_hour.items() if e.passed} & alerted


def test_the_gate_alone_regates_hours_without_publishing(platform):
    client = platform["resources"]["warehouse"].client()
    assert _publish(platform, CLEAN).success
    _publish(platform, BAD)
    kept = quarantined_rows(client, BAD)
    assert kept > 0
    result = _publish(platform, CLEAN, CLEAN + timedelta(hours=1), publish=False)
    assert result.success
    assert result.get_asset_materialization_events() == []
    assert {e.partition: e.passed for e in _gates(result) if e.partition} == {
        _key(CLEAN): True,
        _key(CLEAN + timedelta(hours=1)): True,
    }
    # The quarantined hour is judged again: still failing (the hot path no longer holds its
    # rows), and its rows stay in quarantine rather than being replaced by nothing.
    # The gate alone has no asset to carry a partition key: a run of it names a range.
    result = _publish(platform, BAD, BAD, publish=False)
    (regated,) = [e for e in _gates(result) if e.partition == _key(BAD)]
    assert not result.success and not regated.passed
    assert regated.metadata["quarantined_rows"].value == 0
    assert quarantined_rows(client, BAD) == kept


def test_selecting_part_of_the_publish_step_still_publishes_and_gates_all_of_it(platform):
    # The UI's "Materialize" on one asset of the step, without its checks.
    subset = platform["job"].get_subset(asset_selection={HOT_METRICS}, asset_check_selection=set())
    result = subset.execute_in_process(
        instance=platform["instance"], partition_key=_key(CLEAN), raise_on_error=False
    )
    assert result.success
    outputs = {e.asset_key for e in result.get_asset_materialization_events()}
    assert {PROCESSED, HOT_TELEMETRY, HOT_METRICS} <= outputs
    gate = _gate(result)
    assert gate.passed and gate.partition == _key(CLEAN)
    # The bad hour fails the step although its gate was not selected.
    result = subset.execute_in_process(
        instance=platform["instance"], partition_key=_key(BAD), raise_on_error=False
    )
    assert not result.success and not _gate(result).passed
