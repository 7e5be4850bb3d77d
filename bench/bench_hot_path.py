"""Benchmark: hour loads into the ClickHouse hot path, and hourly vs daily partitions at 90 days.

Part 1 (load): one event hour of processed telemetry (default 1,000 vehicles x 1 Hz =
3.6 M rows, written as Parquet into a temporary lake) is loaded with
`load_hour_from_lake` through the embedded warehouse service over HTTP (stage, metrics,
checksum, two REPLACE PARTITIONs, load log), then re-loaded (a re-run). Baseline, in the
same run: chDB in-process `INSERT INTO vehicle_telemetry SELECT * FROM file(parquet)` of
the same files into the same table, no stage, no metrics. Each side runs in its own
process so its peak RSS is its own.

Part 2 (partitioning): 90 days of telemetry at reduced density (default 100 vehicles x 1
per minute = 13 M rows) in the real table, partitioned by hour (2,160 partitions) and by
day (90), each in its own chDB directory: insert, merge, reopen time, parts, typical
queries, the hourly metrics over 90 days, and the cost of replacing one hour (hour
partitions: swap the hour; day partitions: rebuild the day around it).

Run: `.venv/bin/python bench/bench_hot_path.py [--vehicles 1000] [--history-vehicles 100]`;
results go to bench/results/hot_path.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _process import peak_rss_mb

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULTS = REPO / "bench" / "results" / "hot_path.json"


def _hour() -> datetime:
    # Recent: an hour older than the 90-day TTL could be dropped while we measure.
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)


def _child(role: str, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--role", role, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=REPO,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"{role} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- part 1: one hour ------------------------------------------------------------------


def make_hour(lake_dir: Path, hour: datetime, vehicles: int, per_vehicle: int) -> dict[str, Any]:
    """Write one processed hour into a lake folder as 4 Parquet files, as processing would."""
    import pyarrow.parquet as pq

    from atlasmesh.warehouse.telemetry import processed_hour_path
    from tests.integration.test_telemetry_hot_path import processed_hour

    t0 = time.perf_counter()
    table = processed_hour(hour, vehicles=vehicles, per_vehicle=per_vehicle)
    folder = lake_dir / processed_hour_path(hour)
    folder.mkdir(parents=True)
    step = -(-table.num_rows // 4)
    for i in range(4):
        pq.write_table(
            table.slice(i * step, step), folder / f"part-{i}.parquet", row_group_size=131_072
        )
    size = sum(f.stat().st_size for f in folder.iterdir())
    return {
        "rows": table.num_rows,
        "parquet_mb": size / 1e6,
        "generate_s": time.perf_counter() - t0,
    }


def role_baseline(lake_dir: str, hour_iso: str) -> dict[str, Any]:
    """chDB in-process: INSERT ... SELECT FROM file(parquet) straight into the target table."""
    import clickhouse_connect

    from atlasmesh.warehouse import telemetry as hot

    hour = datetime.fromisoformat(hour_iso)
    client = clickhouse_connect.get_client(dsn=f"chdb://{tempfile.mkdtemp(prefix='hp-base-')}")
    hot.ensure_schema(client)
    files = f"{lake_dir}/{hot.processed_hour_path(hour)}/*.parquet"
    cols = ", ".join(f"`{c}`" for c in hot.CONTENT_COLUMNS)
    t0 = time.perf_counter()
    client.command(
        f"INSERT INTO {hot.DATABASE}.{hot.TELEMETRY_TABLE} ({cols}) "
        f"SELECT {cols} FROM file('{files}', Parquet)"
    )
    seconds = time.perf_counter() - t0
    rows = client.query(f"SELECT count() FROM {hot.DATABASE}.{hot.TELEMETRY_TABLE}").result_rows
    return {"rows": rows[0][0], "seconds": seconds, "peak_rss_mb": peak_rss_mb()}


def role_load(lake_dir: str, hour_iso: str) -> dict[str, Any]:
    """Through the service: load the hour from the lake, then re-run it."""
    from atlasmesh.lake import Lake
    from atlasmesh.settings import Settings
    from atlasmesh.warehouse import telemetry as hot
    from atlasmesh.warehouse.client import connect

    hour = datetime.fromisoformat(hour_iso)
    client = connect(Settings())
    lake = Lake(f"file://{lake_dir}")
    runs = [hot.load_hour_from_lake(client, lake, hour) for _ in range(2)]
    parts = client.query(
        "SELECT count(), sum(bytes_on_disk) FROM system.parts WHERE database = {db:String} "
        "AND table = {t:String} AND partition_id = {p:String} AND active",
        parameters={"db": hot.DATABASE, "t": hot.TELEMETRY_TABLE, "p": hot.partition_id(hour)},
    ).result_rows[0]
    return {
        "rows": runs[0].rows,
        "seconds": runs[0].duration_s,
        "rerun_seconds": runs[1].duration_s,
        "phases_s": runs[0].phases_s,
        "same_checksum": runs[0].checksum == runs[1].checksum,
        "parts_in_hour": parts[0],
        "hour_on_disk_mb": parts[1] / 1e6,
        "peak_rss_mb": peak_rss_mb(),
    }


def bench_load(vehicles: int, per_vehicle: int) -> dict[str, Any]:
    """Part 1: the loader through the service against the in-process baseline."""
    import psutil

    from atlasmesh.warehouse import service
    from tests.fixtures.warehouse import start_service

    hour = _hour()
    with tempfile.TemporaryDirectory(prefix="hp-lake-") as lake_dir:
        data = make_hour(Path(lake_dir), hour, vehicles, per_vehicle)
        baseline = _child("baseline", lake_dir, hour.isoformat())
        svc = start_service(Path(tempfile.mkdtemp(prefix="hp-svc-")))
        try:
            loaded = _child(
                "load", lake_dir, hour.isoformat(), env={"ATLASMESH_CLICKHOUSE_URL": svc.url}
            )
            pid = json.loads(service.ServicePaths.of(svc.settings).pidfile.read_text())["pid"]
            service_rss = psutil.Process(pid).memory_info().rss / 1e6
        finally:
            service.stop(svc.settings)
    base_rate = baseline["rows"] / baseline["seconds"]
    rate = loaded["rows"] / loaded["seconds"]
    return {
        "hour_rows": data["rows"],
        "parquet_mb": round(data["parquet_mb"], 1),
        "baseline_chdb_file_insert": {
            "seconds": round(baseline["seconds"], 2),
            "rows_per_s": round(base_rate),
            "peak_rss_mb": round(baseline["peak_rss_mb"]),
        },
        "load_hour_from_lake_via_service": {
            "seconds": round(loaded["seconds"], 2),
            "rerun_seconds": round(loaded["rerun_seconds"], 2),
            "rows_per_s": round(rate),
            "loader_peak_rss_mb": round(loaded["peak_rss_mb"]),
            "service_rss_after_mb": round(service_rss),
            "rerun_same_checksum": loaded["same_checksum"],
            "phases_s": {k: round(v, 2) for k, v in loaded["phases_s"].items()},
            "parts_in_hour": loaded["parts_in_hour"],
            "hour_on_disk_mb": round(loaded["hour_on_disk_mb"], 1),
        },
        "ratio_load_vs_baseline_rows_per_s": round(rate / base_rate, 3),
    }


# --- part 2: partitioning over 90 days ---------------------------------------------------

_LAYOUTS = {
    "hour": ("toStartOfHour(recorded_at)", "hour"),
    "day": ("toDate(recorded_at)", "toDate(hour)"),
}
_HOURS = 90 * 24


def _history_sql(db: str, vehicles: int, per_hour: int, start: datetime) -> str:
    n = vehicles * per_hour * _HOURS
    step_ms = 3_600_000 // per_hour
    return f"""
INSERT INTO `{db}`.vehicle_telemetry
    (telemetry_id, vehicle_id, recorded_at, ingested_at, latitude, longitude, speed_kmh,
     heading_degrees, battery_level_percent, fuel_level_percent, sensor_readings,
     diagnostic_codes, operational_status, schema_version, source_file, line_number, load_id)
SELECT
    generateUUIDv4(number),
    toUUID(concat(leftPad(hex(v), 8, '0'), '-0000-4000-8000-000000000000')),
    t,
    t + toIntervalMillisecond(800),
    24.3 + (number % 3000) / 10000.0,
    54.3 + (number % 4000) / 10000.0,
    (number * 7919 % 12000) / 100.0,
    (number % 3600) / 10.0,
    if(v % 2 = 0, 20 + (number % 8000) / 100.0, NULL),
    if(v % 2 = 1, 20 + (number % 8000) / 100.0, NULL),
    concat('{{"motor_temp_c":', toString(40 + number % 30), ',"vibration_rms_g":', toString((number % 100) / 100.0), '}}'),
    if(number % 50 = 0, ['P0300'], []),
    ['driving', 'idle', 'parked', 'charging'][number % 4 + 1],
    '2.0.0',
    concat('landing/telemetry/schema=v2/gw-', toString(v % 8), '-', toString(intDiv(i, {per_hour}))),
    number,
    'history'
FROM (
    SELECT number, number % {vehicles} AS v, intDiv(number, {vehicles}) AS i,
        toDateTime64('{start:%Y-%m-%d %H:%M:%S}', 3, 'UTC')
            + toIntervalMillisecond(i * {step_ms} + v) AS t
    FROM numbers({n})
)
SETTINGS max_partitions_per_insert_block = 0, max_insert_threads = 2
"""


def _timed(client: Any, sql: str, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        client.query(sql)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def role_history(directory: str, layout: str, vehicles: int, per_hour: int) -> dict[str, Any]:
    """Fill one layout with 90 days, merge, and time queries and a one-hour replacement."""
    import clickhouse_connect

    from atlasmesh.warehouse import telemetry as hot

    db = "history"
    telemetry_key, metrics_key = _LAYOUTS[layout]
    client = clickhouse_connect.get_client(dsn=f"chdb://{directory}")
    for statement in hot.schema_statements(db):
        client.command(
            statement.replace(
                "PARTITION BY toStartOfHour(recorded_at)", f"PARTITION BY {telemetry_key}"
            ).replace("PARTITION BY toDate(hour)", f"PARTITION BY {metrics_key}")
        )
    now_hour = _hour() + timedelta(hours=2)
    start = now_hour - timedelta(hours=_HOURS - 1)
    out: dict[str, Any] = {"layout": layout}
    t0 = time.perf_counter()
    client.command(_history_sql(db, vehicles, per_hour, start))
    client.command(
        f"INSERT INTO `{db}`.vehicle_metrics_hourly_state "
        + hot.metrics_state_sql(f"`{db}`.vehicle_telemetry")
        + " SETTINGS max_partitions_per_insert_block = 0"
    )
    out["insert_s"] = time.perf_counter() - t0
    print(f"{layout}: inserted in {out['insert_s']:.1f}s", file=sys.stderr)
    parts_sql = (
        "SELECT count(), uniqExact(partition_id), sum(rows), sum(bytes_on_disk) FROM system.parts "
        f"WHERE database = '{db}' AND table = '{{t}}' AND active"
    )
    out["parts_after_insert"] = client.query(parts_sql.format(t="vehicle_telemetry")).result_rows[
        0
    ][0]
    t0 = time.perf_counter()
    client.command(f"OPTIMIZE TABLE `{db}`.vehicle_telemetry FINAL")
    client.command(f"OPTIMIZE TABLE `{db}`.vehicle_metrics_hourly_state FINAL")
    out["optimize_final_s"] = time.perf_counter() - t0
    parts, partitions, rows, size = client.query(
        parts_sql.format(t="vehicle_telemetry")
    ).result_rows[0]
    out.update(parts=parts, partitions=partitions, rows=rows, on_disk_mb=size / 1e6)
    out["metrics_parts"] = client.query(
        parts_sql.format(t="vehicle_metrics_hourly_state")
    ).result_rows[0][0]
    vehicle = client.query(f"SELECT any(vehicle_id) FROM `{db}`.vehicle_telemetry").result_rows[0][
        0
    ]
    last_day = (now_hour - timedelta(hours=24)).strftime("%Y-%m-%d %H:%M:%S")
    one_hour = (now_hour - timedelta(hours=30)).strftime("%Y-%m-%d %H:%M:%S")
    t = f"`{db}`.vehicle_telemetry"
    out["queries_s"] = {
        "fleet_90d_group_by_vehicle": _timed(
            client,
            f"SELECT vehicle_id, avg(speed_kmh), max(speed_kmh), count() FROM {t} GROUP BY vehicle_id",
        ),
        "one_vehicle_90d": _timed(
            client, f"SELECT count(), avg(speed_kmh) FROM {t} WHERE vehicle_id = '{vehicle}'"
        ),
        "fleet_last_24h": _timed(
            client,
            f"SELECT vehicle_id, avg(speed_kmh) FROM {t} WHERE recorded_at >= "
            f"toDateTime64('{last_day}', 3, 'UTC') GROUP BY vehicle_id",
        ),
        # What a load does to its hour: count and checksum over every column.
        "one_hour_checksum": _timed(
            client,
            f"SELECT count(), {hot.CHECKSUM_SQL} FROM {t} "
            f"WHERE toStartOfHour(recorded_at) = toDateTime('{one_hour}', 'UTC')",
        ),
        "metrics_view_90d": _timed(
            client,
            f"SELECT vehicle_id, avg(avg_speed), min(min_battery), sum(telemetry_count) "
            f"FROM `{db}`.vehicle_metrics_hourly GROUP BY vehicle_id",
        ),
    }
    # Replace one hour (same rows) the way each layout must.
    hour = now_hour - timedelta(hours=30)
    hour_sql = f"toStartOfHour(recorded_at) = toDateTime('{one_hour}', 'UTC')"
    client.command(f"CREATE TABLE `{db}`.stage AS {t}")
    t0 = time.perf_counter()
    if layout == "hour":
        client.command(f"INSERT INTO `{db}`.stage SELECT * FROM {t} WHERE {hour_sql}")
        client.command(
            f"ALTER TABLE {t} REPLACE PARTITION ID '{hot.partition_id(hour)}' FROM `{db}`.stage"
        )
    else:
        # The rest of the day must be copied around the new hour: a day partition is
        # the smallest unit REPLACE PARTITION swaps.
        client.command(
            f"INSERT INTO `{db}`.stage SELECT * FROM {t} WHERE toDate(recorded_at) = "
            f"toDate('{hour:%Y-%m-%d}') AND NOT ({hour_sql})"
        )
        client.command(f"INSERT INTO `{db}`.stage SELECT * FROM {t} WHERE {hour_sql}")
        client.command(f"ALTER TABLE {t} REPLACE PARTITION ID '{hour:%Y%m%d}' FROM `{db}`.stage")
    out["replace_one_hour_s"] = time.perf_counter() - t0
    out["replace_one_hour_rows_written"] = client.query(
        f"SELECT count() FROM `{db}`.stage"
    ).result_rows[0][0]
    # The same for the hour's metrics, recomputed from the telemetry of the hour.
    m = f"`{db}`.vehicle_metrics_hourly_state"
    client.command(f"CREATE TABLE `{db}`.mstage AS {m}")
    t0 = time.perf_counter()
    if layout == "day":
        client.command(
            f"INSERT INTO `{db}`.mstage SELECT * FROM {m} WHERE toDate(hour) = "
            f"toDate('{hour:%Y-%m-%d}') AND hour != toDateTime('{one_hour}', 'UTC')"
        )
    client.command(
        f"INSERT INTO `{db}`.mstage "
        + hot.metrics_state_sql(f"(SELECT * FROM {t} WHERE {hour_sql})")
    )
    key = hot.partition_id(hour) if layout == "hour" else f"{hour:%Y%m%d}"
    client.command(f"ALTER TABLE {m} REPLACE PARTITION ID '{key}' FROM `{db}`.mstage")
    out["replace_one_hour_metrics_s"] = time.perf_counter() - t0
    out["replace_one_hour_metrics_rows_written"] = client.query(
        f"SELECT count() FROM `{db}`.mstage"
    ).result_rows[0][0]
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def role_reopen(directory: str) -> dict[str, Any]:
    """Open an existing chDB directory and answer a first query (loads every part's metadata)."""
    import clickhouse_connect

    t0 = time.perf_counter()
    client = clickhouse_connect.get_client(dsn=f"chdb://{directory}")
    client.query("SELECT count() FROM history.vehicle_telemetry")
    return {"open_and_first_query_s": time.perf_counter() - t0}


def bench_partitioning(vehicles: int, per_hour: int) -> dict[str, Any]:
    """Part 2: the same 90 days under hourly and daily partitions."""
    out: dict[str, Any] = {"vehicles": vehicles, "rows_per_vehicle_hour": per_hour, "days": 90}
    for layout in _LAYOUTS:
        with tempfile.TemporaryDirectory(prefix=f"hp-{layout}-") as directory:
            result = _child("history", directory, layout, str(vehicles), str(per_hour))
            result.update(_child("reopen", directory))
            out[layout] = result
    return out


# --- report ------------------------------------------------------------------------------


def _print(results: dict[str, Any]) -> None:
    load = results.get("load")
    if load:
        base, ours = load["baseline_chdb_file_insert"], load["load_hour_from_lake_via_service"]
        print(f"\nOne hour: {load['hour_rows']:,} rows ({load['parquet_mb']} MB Parquet)")
        print(f"{'path':44} {'seconds':>8} {'rows/s':>11} {'peak RSS MB':>12}")
        print(
            f"{'baseline: chDB INSERT SELECT FROM file()':44} {base['seconds']:>8} "
            f"{base['rows_per_s']:>11,} {base['peak_rss_mb']:>12}"
        )
        print(
            f"{'load_hour_from_lake via service':44} {ours['seconds']:>8} "
            f"{ours['rows_per_s']:>11,} {ours['loader_peak_rss_mb']:>12}"
        )
        print(f"{'  re-run (replaces the hour)':44} {ours['rerun_seconds']:>8}")
        for phase, seconds in ours["phases_s"].items():
            print(f"{'  phase: ' + phase:44} {seconds:>8}")
        print(f"ratio (ours / baseline rows/s): {load['ratio_load_vs_baseline_rows_per_s']}")
    part = results.get("partitioning")
    if part:
        h, d = part["hour"], part["day"]
        print(
            f"\n90 days, {part['vehicles']} vehicles x {part['rows_per_vehicle_hour']}/h "
            f"({h['rows']:,} rows)"
        )
        print(f"{'':34} {'hour partitions':>16} {'day partitions':>16} {'hour/day':>9}")
        rows = [
            ("partitions", h["partitions"], d["partitions"]),
            ("active parts after OPTIMIZE", h["parts"], d["parts"]),
            ("metrics parts", h["metrics_parts"], d["metrics_parts"]),
            ("insert 90 days (s)", h["insert_s"], d["insert_s"]),
            ("reopen + first query (s)", h["open_and_first_query_s"], d["open_and_first_query_s"]),
            *((f"query {k} (s)", v, d["queries_s"][k]) for k, v in h["queries_s"].items()),
            ("replace one hour (s)", h["replace_one_hour_s"], d["replace_one_hour_s"]),
            (
                "rows written to replace one hour",
                h["replace_one_hour_rows_written"],
                d["replace_one_hour_rows_written"],
            ),
            (
                "replace one hour of metrics (s)",
                h["replace_one_hour_metrics_s"],
                d["replace_one_hour_metrics_s"],
            ),
            (
                "metrics rows written for one hour",
                h["replace_one_hour_metrics_rows_written"],
                d["replace_one_hour_metrics_rows_written"],
            ),
        ]
        for name, a, b in rows:
            ratio = f"{a / b:.2f}" if b else "-"
            fa = f"{a:,.3f}" if isinstance(a, float) else f"{a:,}"
            fb = f"{b:,.3f}" if isinstance(b, float) else f"{b:,}"
            print(f"{name:34} {fa:>16} {fb:>16} {ratio:>9}")


def main() -> None:
    """Run the benchmark (or one of its child roles) and write bench/results/hot_path.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vehicles", type=int, default=1000)
    parser.add_argument("--per-vehicle", type=int, default=3600, help="rows per vehicle-hour")
    parser.add_argument("--history-vehicles", type=int, default=100)
    parser.add_argument("--history-per-hour", type=int, default=60)
    parser.add_argument("--skip-load", action="store_true")
    parser.add_argument("--skip-partitioning", action="store_true")
    parser.add_argument("--role", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.role:
        role = {
            "baseline": role_baseline,
            "load": role_load,
            "history": lambda d, layout, v, p: role_history(d, layout, int(v), int(p)),
            "reopen": role_reopen,
        }[args.role]
        print(json.dumps(role(*rest), default=str))
        return
    results: dict[str, Any] = {
        "benchmark": "hot_path",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg()},
    }
    if not args.skip_load:
        results["load"] = bench_load(args.vehicles, args.per_vehicle)
    if not args.skip_partitioning:
        results["partitioning"] = bench_partitioning(args.history_vehicles, args.history_per_hour)
    results["machine"]["load_avg_at_end"] = os.getloadavg()
    if RESULTS.exists():
        # A skipped part keeps its figures from the previous run.
        previous = json.loads(RESULTS.read_text())
        for part in ("load", "partitioning"):
            if part not in results and part in previous:
                results[part] = previous[part]
    _print(results)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\nwrote {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
