"""`make demo`: run the whole platform end to end on the embedded default and say where to look."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from datetime import UTC, date, datetime, timedelta
from datetime import time as dt_time
from pathlib import Path

from atlasmesh.fleet_core.db import mask_url
from atlasmesh.settings import Settings
from orchestration.instance import prepare_dagster_home


def _size(name: str, default: int, low: int, high: int) -> int:
    """A whole-number demo size from the environment, or exit with what is wrong."""
    text = os.environ.get(name, str(default))
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise SystemExit(f"{name} must be a whole number from {low} to {high}, got {text!r}")
    return value


DEMO_DAYS = _size("ATLASMESH_DEMO_DAYS", 14, 1, 366)
DEMO_VEHICLES = _size("ATLASMESH_DEMO_VEHICLES", 24, 1, 10_000)
DOCS_PORT = _size("ATLASMESH_DOCS_PORT", 8580, 1, 65_535)
# What an analyst asks first: the fleet's days, from the fleet-day mart.
SAMPLE_MART_QUERY = """SELECT activity_date, sum(vehicles_active) AS vehicles_active,
       round(sum(distance_km)) AS distance_km, round(avg(utilisation_rate), 2) AS utilisation
FROM {schema}.fct_fleet_days GROUP BY activity_date ORDER BY activity_date"""


def _step(title: str) -> float:
    print(f"\n==> {title}", flush=True)
    return time.perf_counter()


def _done(started: float, detail: str = "") -> None:
    print(f"    done in {time.perf_counter() - started:.1f}s {detail}".rstrip(), flush=True)


def _materialize(
    selection,
    *,
    partition_range: tuple[str, str] | None = None,
    run_config: dict | None = None,
    failing_checks_ok: bool = False,
):
    """Run assets through the Dagster instance, so the run shows in the UI afterwards."""
    import dagster as dg
    from dagster._core.storage.tags import (
        ASSET_PARTITION_RANGE_END_TAG,
        ASSET_PARTITION_RANGE_START_TAG,
    )

    from orchestration.definitions import defs

    definitions = defs()
    keys = set(selection)
    checks = {
        key for key in definitions.resolve_asset_graph().asset_check_keys if key.asset_key in keys
    }
    job = definitions.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection=keys, asset_check_selection=checks
    )
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(
            instance=instance,
            run_config=run_config,
            tags={
                ASSET_PARTITION_RANGE_START_TAG: partition_range[0],
                ASSET_PARTITION_RANGE_END_TAG: partition_range[1],
            }
            if partition_range
            else None,
            raise_on_error=False,
        )
    from assets.quality import TELEMETRY_GATE

    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    # A blocking gate that failed fails the publish step; the demo expects that for its bad hour.
    if failing_checks_ok and failures and all(_gate_failed(e, TELEMETRY_GATE) for e in failures):
        return result
    if not result.success:
        failures = [e.message for e in result.all_events if e.is_failure]
        raise SystemExit("demo step failed:\n  " + "\n  ".join(str(f) for f in failures[:5]))
    return result


def _gate_failed(event, check_name: str) -> bool:
    error = event.step_failure_data.error
    return (
        error is not None
        and error.cls_name == "DagsterAssetCheckFailedError"
        and (check_name in error.message)
    )


def _metadata_of(result, key):
    return next(
        e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.asset_key == key
    )


def _sum_metadata(result, key, name: str) -> int:
    """Sum one count over every partition materialised in a run."""
    return sum(
        int(e.materialization.metadata[name].value)
        for e in result.get_asset_materialization_events()
        if e.asset_key == key and name in e.materialization.metadata
    )


def _raise_alerts(settings: Settings) -> str:
    """Tick the check-evaluation and delivery sensors once, as the daemon would every 30 s."""
    import dagster as dg

    from atlasmesh.alerts import list_alerts
    from atlasmesh.warehouse.client import connect
    from orchestration.alerts import alert_delivery, check_evaluation_alerts
    from orchestration.resources import build_resources

    resources = build_resources(settings)
    with dg.DagsterInstance.get() as instance:
        cursor = None
        while True:  # catch up on every check evaluation so far, a tick at a time
            context = dg.build_sensor_context(
                instance=instance, cursor=cursor, resources={"warehouse": resources["warehouse"]}
            )
            outcome = check_evaluation_alerts(context)
            if context.cursor == cursor or "no new" in str(getattr(outcome, "skip_message", "")):
                break
            cursor = context.cursor
        alert_delivery(
            dg.build_sensor_context(
                instance=instance,
                resources={k: resources[k] for k in ("warehouse", "platform")},
            )
        )
    open_alerts = list_alerts(connect(settings), "open", alert_type="quality_gate_failed")
    return (
        f"{len(open_alerts)} open quality alert(s), e.g. {open_alerts[0].message[:120]!r}"
        if open_alerts
        else "no open quality alerts"
    )


def check_dagster_storage(settings: Settings, timeout_s: int = 10) -> None:
    """Stop with one clear line when Dagster's PostgreSQL is set but cannot be reached.

    Dagster itself retries for a while and then fails deep inside the first run with a
    traceback that names neither the database nor the variable.
    """
    url = settings.dagster_postgres_url.get_secret_value()
    if not url:
        return
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    where = "Dagster's PostgreSQL storage (ATLASMESH_DAGSTER_POSTGRES_URL)"
    shape = "postgresql://user[:password]@host:port/database"
    try:
        parsed = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        # Not echoed: a malformed URL may still hold a password.
        raise SystemExit(f"demo: error: {where} cannot be parsed; it must be {shape}") from None
    if parsed.get_backend_name() != "postgresql":
        raise SystemExit(f"demo: error: {where} must be {shape}, not {parsed.drivername}://")
    # The same driver and URL handling as dagster-postgres, so what passes here works there.
    engine = sa.create_engine(
        parsed, poolclass=NullPool, connect_args={"connect_timeout": timeout_s}
    )
    try:
        engine.connect().close()
    except sa.exc.DBAPIError as exc:
        # libpq's connection errors name host, port, user and database, never the password.
        text = str(exc.orig).strip()
        reason = text.splitlines()[0] if text else type(exc.orig).__name__
        raise SystemExit(f"demo: error: cannot open {where} at {mask_url(url)}: {reason}") from None
    finally:
        engine.dispose()


def fault_hour(first: date, now: datetime) -> datetime:
    """The arrival hour the demo corrupts: 10:00 of its second day, or the last whole hour
    before now when the simulated span is shorter (never before its first hour)."""
    preferred = datetime.combine(first + timedelta(days=1), dt_time(10), tzinfo=UTC)
    last_whole = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    return max(min(preferred, last_whole), datetime.combine(first, dt_time(0), tzinfo=UTC))


def main() -> None:
    """Start the warehouse, simulate a fleet ending now, run the pipeline, print a summary."""
    settings = Settings()
    home = settings.home_dir
    home.mkdir(parents=True, exist_ok=True)
    dagster_home = Path(os.environ.setdefault("DAGSTER_HOME", str(settings.dagster_home)))
    prepare_dagster_home(settings, dagster_home)
    check_dagster_storage(settings)
    print(f"AtlasMesh demo: state in {home}")

    started = _step("Warehouse (ClickHouse HTTP interface)")
    from atlasmesh.warehouse.client import connect
    from atlasmesh.warehouse.service import ensure_running

    url = ensure_running(settings)
    version = connect(settings).command("SELECT version()")
    _done(started, f"- {url} answers, ClickHouse engine {version}")

    started = _step("Lake")
    from atlasmesh.lake import Lake

    lake = Lake.from_settings(settings)
    lake.write_bytes("_platform/demo-probe.txt", b"writable\n")
    assert lake.read_bytes("_platform/demo-probe.txt") == b"writable\n"
    _done(started, f"- {settings.lake_root} is writable")

    started = _step("Dagster definitions")
    import dagster as dg

    from assets.fleet_core import TABLE_KEYS
    from assets.ingest import HOT_METRICS, HOT_TELEMETRY, HOUR_KEY_FORMAT, PROCESSED, STAGED
    from assets.quality import TELEMETRY_GATE
    from assets.sources import FLEET_CORE_DB, LANDING_TELEMETRY
    from orchestration.definitions import defs

    graph = defs().resolve_asset_graph()
    _done(started, f"- {len(graph.get_all_asset_keys())} assets load")

    today = datetime.now(UTC).date()
    first = today - timedelta(days=DEMO_DAYS - 1)
    started = _step(
        f"Simulating {DEMO_VEHICLES} vehicles from {first} to now (sources, one Dagster run)"
    )
    result = _materialize(
        [LANDING_TELEMETRY, FLEET_CORE_DB],
        partition_range=(first.isoformat(), today.isoformat()),
        run_config={
            "ops": {
                "fleet_simulation": {
                    "config": {
                        "vehicles": DEMO_VEHICLES,
                        "origin": first.isoformat(),
                        # Half-way, so the demo shows schema v1 and v2 side by side.
                        "firmware_update": (first + timedelta(days=DEMO_DAYS / 2)).isoformat(),
                    }
                }
            }
        },
    )
    landing = _metadata_of(result, LANDING_TELEMETRY)
    _done(
        started,
        f"- {landing['events'].value:,} events in {landing['files'].value:,} landing files",
    )

    started = _step("Extracting fleet-core (allow-listed columns) to the lake and ClickHouse")
    _materialize(list(TABLE_KEYS.values()))
    _done(started)

    bad_hour = fault_hour(first, datetime.now(UTC))
    started = _step(f"Injecting a GPS fault into the deliveries of {bad_hour:%Y-%m-%d %H}:00 UTC")
    from atlasmesh.simulator.incidents import inject_gps_jumps

    fault = inject_gps_jumps(lake, bad_hour)
    _done(
        started,
        f"- {fault.lines:,} fixes in {fault.files} files now jump ~55 km: every line still "
        "passes validation, only the quality gate can see it",
    )

    now = datetime.now(UTC)
    hours = (f"{first.isoformat()}-00:00", now.strftime(HOUR_KEY_FORMAT))
    started = _step(f"Validating every arrival hour ({hours[0]} .. {hours[1]})")
    result = _materialize([STAGED], partition_range=hours)
    staged = [
        _sum_metadata(result, STAGED, k)
        for k in ("received", "staged", "duplicates", "dead_lettered")
    ]
    _done(
        started,
        f"- received {staged[0]:,} = staged {staged[1]:,} + duplicates {staged[2]:,} "
        f"+ dead-lettered {staged[3]:,}",
    )

    started = _step(
        "Publishing every event hour to processed Parquet and ClickHouse, each through the "
        "quality gate"
    )
    result = _materialize(
        [PROCESSED, HOT_TELEMETRY, HOT_METRICS], partition_range=hours, failing_checks_ok=True
    )
    accepted = _sum_metadata(result, PROCESSED, "accepted")
    gate = [
        e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
        and e.asset_check_evaluation_data.check_name == TELEMETRY_GATE
        and e.asset_check_evaluation_data.partition is not None
    ]
    blocked = sorted(g.partition for g in gate if not g.passed)
    _done(
        started,
        f"- {accepted:,} events accepted; quality gate: {len(gate) - len(blocked)} hours passed, "
        f"{len(blocked)} blocked and quarantined ({', '.join(blocked) or 'none'})",
    )

    started = _step("Alerting the on-call (the sensors the Dagster daemon runs, ticked once)")
    alerts = _raise_alerts(settings)
    _done(started, f"- {alerts}")

    started = _step(f"Building the marts with dbt ({first} .. {today}, one Dagster run)")

    from atlasmesh.analytics import DEFAULT_SCHEMA, prepare_warehouse

    # The marts also read platform tables (ops.quality_scores) that may not exist yet.
    prepare_warehouse(settings)
    dbt_keys = dg.AssetSelection.kind("dbt").resolve(graph)
    # dagster-dbt echoes dbt's output on stdout (for Dagster's log capture): into a file.
    dbt_log = home / "dbt" / "demo-build.log"
    dbt_log.parent.mkdir(parents=True, exist_ok=True)
    try:
        with dbt_log.open("w") as log, contextlib.redirect_stdout(log):
            result = _materialize(dbt_keys, partition_range=(first.isoformat(), today.isoformat()))
    except SystemExit:
        print(f"    dbt output: {dbt_log}", flush=True)
        raise
    checks = result.get_asset_check_evaluations()
    passed = sum(1 for c in checks if c.passed)
    # Warn-severity tests flag what the bad hour left behind (e.g. trips with a hole).
    warned = sorted(
        c.check_name for c in checks if not c.passed and c.severity == dg.AssetCheckSeverity.WARN
    )
    _done(
        started,
        f"- {len(dbt_keys)} models in {DEFAULT_SCHEMA}, {DEFAULT_SCHEMA}_staging and "
        f"{DEFAULT_SCHEMA}_intermediate; dbt tests as asset checks: {passed}/{len(checks)} passed"
        + (f", warnings: {', '.join(warned)}" if warned else "")
        + f" (dbt output: {dbt_log})",
    )

    client = connect(settings)
    sample = SAMPLE_MART_QUERY.format(schema=DEFAULT_SCHEMA)
    answer = client.query(sample)
    print(f"\nA mart query (atlasmesh dbt -- show, clickhouse-connect or curl):\n{sample}")
    print("  " + "  ".join(f"{c:>16}" for c in answer.column_names))
    for row in answer.result_rows:
        print("  " + "  ".join(f"{v!s:>16}" for v in row))
    rows = client.command("SELECT count() FROM atlasmesh_analytics.vehicle_telemetry")
    vehicles = client.command(
        "SELECT uniqExact(vehicle_id) FROM atlasmesh_analytics.vehicle_telemetry"
    )
    print(
        f"""
Summary
{summary_places(settings, url)}
  telemetry       {int(rows):,} rows from {int(vehicles)} vehicles in atlasmesh_analytics.vehicle_telemetry
  marts           database {DEFAULT_SCHEMA} (docs/analytics.md); run dbt by hand: atlasmesh dbt -- build
  dbt docs        make docs   then open http://127.0.0.1:{DOCS_PORT}/dbt/
  Dagster UI      make ui   then open http://127.0.0.1:3000
  bad hour        {bad_hour:%Y-%m-%d %H}:00 was blocked by the quality gate and quarantined:
                  UI > Assets > atlasmesh_analytics/vehicle_telemetry > Checks > {TELEMETRY_GATE}
                  alerts: atlasmesh alerts list   (runbook docs/runbooks/quality_gate_failed.md)
                  rows kept aside in atlasmesh_analytics.vehicle_telemetry_quarantine
  quality docs    make docs   then open http://127.0.0.1:{DOCS_PORT}/quality/   (Data Docs)
  stop            {_stop_hint(settings)}
"""
    )


def summary_places(settings: Settings, url: str) -> str:
    """The summary's lines saying where lake, warehouse and fleet-core are, with no secret."""
    return (
        f"  lake            {settings.lake_root}\n"
        f"  warehouse       {url}   (query: {_curl_hint(settings, url)} or clickhouse-connect)\n"
        f"  fleet-core DB   {mask_url(settings.fleet_core_url)}"
    )


def _curl_hint(settings: Settings, url: str) -> str:
    """A curl line that works against the warehouse, naming the credential variables, not values."""
    if not settings.clickhouse_password.get_secret_value():
        return f"curl '{url}/?query=SELECT+1'"
    return (
        'curl -u "$ATLASMESH_CLICKHOUSE_USER:$ATLASMESH_CLICKHOUSE_PASSWORD" '
        f"'{url}/?query=SELECT+1'"
    )


def _stop_hint(settings: Settings) -> str:
    if settings.embedded_warehouse:
        return "make stop (the warehouse service keeps running for the UI and analysts)"
    return "nothing to stop: the warehouse is your ClickHouse server, not started by the demo"


def run() -> None:
    """`python -m orchestration.demo`: the demo, with an unreachable service as one clear line."""
    from pydantic import ValidationError

    from atlasmesh.lake import LakeError
    from atlasmesh.settings import setting_problems
    from atlasmesh.warehouse.client import WarehouseConnectionError
    from atlasmesh.warehouse.service import WarehouseServiceError

    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
    except (LakeError, WarehouseConnectionError, WarehouseServiceError) as exc:
        # Their messages name the service, the address and the variable to fix, never a secret.
        sys.exit(f"demo: error: {exc}")
    except ValidationError as exc:
        problems = setting_problems(exc)
        if problems is None:
            raise
        sys.exit("demo: error: " + "\n  ".join(problems))


if __name__ == "__main__":
    run()
