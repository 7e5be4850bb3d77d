"""The telemetry gate in Dagster: a corrupted hour is blocked and quarantined, a clean one passes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from assets.fleet_core import TABLE_KEYS, fleet_core_tables
from assets.ingest import (
    CONSERVED,
    HOT_METRICS,
    HOT_TELEMETRY,
    PROCESSED,
    STAGED,
    published_telemetry,
    staged_telemetry,
)
from assets.quality import TELEMETRY_GATE, telemetry_hour_conforms
from assets.sources import fleet_simulation
from atlasmesh.lake import Lake
from atlasmesh.simulator.incidents import inject_gps_jumps
from atlasmesh.warehouse import service
from atlasmesh.warehouse.quarantine import quarantined_rows
from orchestration.resources import build_resources
from tests.fixtures.warehouse import start_service

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(600),
    pytest.mark.xdist_group("quality_gate"),
]

DAY = (datetime.now(UTC) - timedelta(days=3)).date()
CLEAN, BAD = (datetime(DAY.year, DAY.month, DAY.day, h, tzinfo=UTC) for h in (6, 14))
SIM = {
    "ops": {
        "fleet_simulation": {
            "config": {"vehicles": 6, "interval_s": 60.0, "fault_rate": 0.0, "origin": str(DAY)}
        }
    }
}
DOWNSTREAM = dg.AssetKey(["marts", "downstream_of_telemetry"])


@dg.asset(key=DOWNSTREAM, deps=[HOT_TELEMETRY], partitions_def=published_telemetry.partitions_def)
def downstream_of_telemetry() -> None:
    """Stands for the marts: it must not run on a failed hour."""


ASSETS = [
    fleet_simulation,
    fleet_core_tables,
    staged_telemetry,
    published_telemetry,
    telemetry_hour_conforms,
    downstream_of_telemetry,
]


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A day simulated and extracted; the BAD hour's deliveries carry a GPS fault; both staged.

    The hours are far apart: a gateway batch window reaches ten minutes back, so the fault
    also touches the end of the event hour before BAD.
    """
    svc = start_service(tmp_path_factory.mktemp("gate_home"))
    resources = build_resources(svc.settings)
    defs = dg.Definitions(assets=ASSETS, resources=resources)
    job = defs.resolve_implicit_global_asset_job_def()
    with dg.instance_for_test() as instance:
        assert dg.materialize(
            [fleet_simulation],
            resources=resources,
            partition_key=str(DAY),
            run_config=SIM,
            instance=instance,
        ).success
        assert dg.materialize(
            [fleet_core_tables],
            resources=resources,
            instance=instance,
            selection=list(TABLE_KEYS.values()),
        ).success
        fault = inject_gps_jumps(Lake.from_settings(svc.settings), BAD)
        assert fault.lines > 100
        for hour in (CLEAN, BAD, BAD + timedelta(hours=1), CLEAN + timedelta(hours=1)):
            staged = job.get_subset(asset_selection={STAGED}).execute_in_process(
                instance=instance, partition_key=f"{hour:%Y-%m-%d-%H:%M}"
            )
            assert staged.success
        yield {"job": job, "instance": instance, "settings": svc.settings, "resources": resources}
    service.stop(svc.settings, timeout=30)


def _publish(platform: dict, hour: datetime) -> dg.ExecuteInProcessResult:
    subset = platform["job"].get_subset(
        asset_selection={PROCESSED, HOT_TELEMETRY, HOT_METRICS, DOWNSTREAM},
        asset_check_selection={
            dg.AssetCheckKey(HOT_TELEMETRY, TELEMETRY_GATE),
            dg.AssetCheckKey(PROCESSED, CONSERVED),
        },
    )
    return subset.execute_in_process(
        instance=platform["instance"], partition_key=f"{hour:%Y-%m-%d-%H:%M}", raise_on_error=False
    )


def _gate(result: dg.ExecuteInProcessResult):
    (evaluation,) = [
        e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
        and e.asset_check_evaluation_data.check_name == TELEMETRY_GATE
    ]
    return evaluation


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
    assert score < _score(client, CLEAN)[0]
