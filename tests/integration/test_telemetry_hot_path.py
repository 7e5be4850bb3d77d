"""The ClickHouse hot path through the warehouse service: exact, idempotent, atomic, crash-safe hour loads."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from atlasmesh.lake import Lake
from atlasmesh.telemetry.registry import PROCESSED_SCHEMA, SENSOR_FIELDS
from atlasmesh.warehouse import telemetry as hot

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
# Two hours of yesterday (one metrics partition): recent, since hours older than the
# 90-day TTL could be dropped by the engine during the test.
HOUR_A = datetime.now(UTC).replace(hour=3, minute=0, second=0, microsecond=0) - timedelta(days=1)
HOUR_B = HOUR_A + timedelta(hours=1)


def _uuids(rng: np.random.Generator, n: int) -> pl.Series:
    raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    h = pl.Series(np.frombuffer(raw.tobytes().hex().encode(), dtype="S32").astype(str))
    parts = [h.str.slice(a, b) for a, b in ((0, 8), (8, 4), (12, 4), (16, 4), (20, 12))]
    return parts[0] + "-" + parts[1] + "-" + parts[2] + "-" + parts[3] + "-" + parts[4]


def processed_hour(
    hour: datetime, vehicles: int = 6, per_vehicle: int = 20, seed: int = 0
) -> pa.Table:
    """Processed telemetry of one event hour (PROCESSED_SCHEMA): EVs and ICE, v1 and v2, nulls, DTCs."""
    rng = np.random.default_rng([seed, int(hour.timestamp())])
    n = vehicles * per_vehicle
    v = np.repeat(np.arange(vehicles), per_vehicle)
    ev = (np.arange(vehicles) % 2 == 0)[v]
    v2 = (np.arange(vehicles) % 3 != 0)[v]
    step = 3_600_000 // per_vehicle
    offset = np.tile(np.arange(per_vehicle) * step, vehicles) + rng.integers(0, step, n)
    recorded = np.datetime64(hour.replace(tzinfo=None), "ms") + offset.astype("timedelta64[ms]")
    ingested = recorded + rng.integers(200, 5_000, n).astype("timedelta64[ms]")
    k = rng.integers(0, 3, n) * (rng.random(n) < 0.2)
    pool = np.array(["P0A80", "P0300", "C1234", "U0100"])
    codes = pa.ListArray.from_arrays(
        pa.array(np.concatenate([[0], np.cumsum(k)]).astype(np.int32)),
        pa.array(pool[rng.integers(0, 4, int(k.sum()))]),
    )

    def maybe(values: np.ndarray, keep: np.ndarray) -> pl.Series:
        return pl.Series(np.where(keep, values, np.nan)).fill_nan(None)

    def maybe_text(text: str, share: float) -> pl.Series:
        return pl.Series(np.where(rng.random(n) < share, text, "")).replace("", None)

    gateway_files = pl.Series(
        f"landing/telemetry/schema=v2/date={hour:%Y-%m-%d}/hour={hour:%H}/gw-{g}-{hour:%Y%m%dT%H}{m:02d}.jsonl.gz"
        for g in range(3)
        for m in range(60)
    )
    cols: dict[str, Any] = {
        "telemetry_id": _uuids(rng, n),
        "vehicle_id": _uuids(np.random.default_rng(seed), vehicles).gather(v),
        "recorded_at": pl.Series(recorded).dt.replace_time_zone("UTC"),
        "ingested_at": pl.Series(ingested).dt.replace_time_zone("UTC"),
        "latitude": rng.uniform(24.3, 24.6, n).round(6),
        "longitude": rng.uniform(54.3, 54.7, n).round(6),
        "speed_kmh": rng.uniform(0, 120, n).round(3),
        "heading_degrees": rng.uniform(0, 359.9, n).round(1),
        "battery_level_percent": maybe(rng.uniform(5, 100, n).round(2), ev),
        "fuel_level_percent": maybe(rng.uniform(5, 100, n).round(2), ~ev),
        "odometer_km": maybe(rng.uniform(1e3, 2e5, n).round(1), v2),
        "firmware_version": pl.Series(np.where(v2, "2.4.1", "")).replace("", None),
        "diagnostic_codes": pl.Series(codes),
        "environmental_conditions": maybe_text('{"ambient_temp_c":31.5,"road":"dry"}', 0.9),
        "operational_status": np.array(["driving", "idle", "charging", "parked", "fault"])[
            rng.integers(0, 5, n)
        ],
        "custom_data": maybe_text('{"gateway_id":"gw-1"}', 0.5),
        "schema_version": np.where(v2, "2.0.0", "1.0.0"),
        "source_file": gateway_files.gather(rng.integers(0, len(gateway_files), n)),
        "line_number": np.arange(1, n + 1, dtype=np.int64),
    }
    for i, f in enumerate(SENSOR_FIELDS):
        cols[f.name] = maybe(rng.normal(50 + i, 5, n).round(3), rng.random(n) < 0.95)
    df = pl.DataFrame(cols).with_columns(
        sensor_readings=pl.format(
            '{{"motor_temp_c":{},"vibration_rms_g":{}}}',
            pl.col("motor_temp_c").fill_null(0),
            pl.col("vibration_rms_g").fill_null(0),
        )
    )
    return df.select(PROCESSED_SCHEMA.names).to_arrow().cast(PROCESSED_SCHEMA)


def _rows(client: Any, db: str, hour: datetime) -> list[dict[str, Any]]:
    cols = ", ".join(f"`{c}`" for c in PROCESSED_SCHEMA.names)
    result = client.query(
        f"SELECT {cols} FROM `{db}`.vehicle_telemetry "
        "WHERE toStartOfHour(recorded_at) = {h:DateTime('UTC')}",
        parameters={"h": hour},
    )
    rows = [dict(zip(result.column_names, r, strict=True)) for r in result.result_rows]
    for row in rows:
        row["telemetry_id"], row["vehicle_id"] = str(row["telemetry_id"]), str(row["vehicle_id"])
        for ts in ("recorded_at", "ingested_at"):
            row[ts] = row[ts].replace(tzinfo=UTC) if row[ts].tzinfo is None else row[ts]
    return sorted(rows, key=lambda r: r["telemetry_id"])


def _metrics(client: Any, db: str, hour: datetime) -> dict[str, tuple]:
    rows = client.query(
        f"SELECT toString(vehicle_id), telemetry_count, avg_speed, max_speed, avg_battery, "
        f"min_battery, avg_fuel, min_fuel, rows_with_dtc FROM `{db}`.vehicle_metrics_hourly "
        "WHERE hour = {h:DateTime('UTC')}",
        parameters={"h": hour},
    ).result_rows
    return {r[0]: r[1:] for r in rows}


def _expected_metrics(table: pa.Table) -> dict[str, tuple]:
    """The hourly metrics computed directly from the rows, outside the warehouse."""
    df = pl.from_arrow(table)
    grouped = df.group_by("vehicle_id").agg(
        pl.len().alias("n"),
        pl.col("speed_kmh").mean(),
        pl.col("speed_kmh").max().alias("max_speed"),
        pl.col("battery_level_percent").mean(),
        pl.col("battery_level_percent").min().alias("min_battery"),
        pl.col("fuel_level_percent").mean(),
        pl.col("fuel_level_percent").min().alias("min_fuel"),
        (pl.col("diagnostic_codes").list.len() > 0).sum().alias("dtc"),
    )
    return {r[0]: tuple(r[1:]) for r in grouped.iter_rows()}


def _assert_metrics_equal(actual: dict[str, tuple], expected: dict[str, tuple]) -> None:
    assert actual.keys() == expected.keys()
    for vehicle, exp in expected.items():
        got = actual[vehicle]
        for g, e in zip(got, exp, strict=True):
            # Averages may differ in the last bits: summation order is not fixed.
            if isinstance(e, float):
                assert g is not None and math.isclose(g, e, rel_tol=1e-12), (vehicle, got, exp)
            else:
                assert g == e, (vehicle, got, exp)


def _direct_metrics(client: Any, db: str, hour: datetime) -> dict[str, tuple]:
    """The metrics as a plain GROUP BY over the telemetry table."""
    rows = client.query(
        f"SELECT toString(vehicle_id), count(), avg(speed_kmh), max(speed_kmh), "
        f"avg(battery_level_percent), min(battery_level_percent), avg(fuel_level_percent), "
        f"min(fuel_level_percent), countIf(notEmpty(diagnostic_codes)) "
        f"FROM `{db}`.vehicle_telemetry WHERE toStartOfHour(recorded_at) = {{h:DateTime('UTC')}} "
        "GROUP BY vehicle_id",
        parameters={"h": hour},
    ).result_rows
    return {r[0]: tuple(r[1:]) for r in rows}


def _content_of(client: Any, db: str, table: pa.Table) -> tuple[int, int]:
    """(rows, checksum) the hot path must report for `table`, computed apart from any load."""
    hour = table.column("recorded_at")[0].as_py().replace(minute=0, second=0, microsecond=0)
    client.command(f"CREATE TABLE `{db}`.expected AS `{db}`.vehicle_telemetry")
    try:
        client.insert_arrow(f"`{db}`.expected", table)
        return hot.hour_content(client, hour, db, table="expected")
    finally:
        client.command(f"DROP TABLE `{db}`.expected SYNC")


def test_an_hour_reads_back_value_by_value(ch_client: Any, ch_database: str) -> None:
    table = processed_hour(HOUR_A)
    result = hot.load_hour(ch_client, HOUR_A, table, load_id="first-load", database=ch_database)

    assert (result.rows, result.metrics_rows) == (table.num_rows, 6)
    assert (result.rows, result.checksum) == hot.hour_content(ch_client, HOUR_A, ch_database)
    expected = sorted(table.to_pylist(), key=lambda r: r["telemetry_id"])
    got = _rows(ch_client, ch_database, HOUR_A)
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g == e
    _assert_metrics_equal(_metrics(ch_client, ch_database, HOUR_A), _expected_metrics(table))

    log = ch_client.query(
        f"SELECT load_id, rows, checksum, loaded_at, max_recorded_at, max_ingested_at "
        f"FROM `{ch_database}`.telemetry_loads_latest WHERE hour = {{h:DateTime('UTC')}}",
        parameters={"h": HOUR_A},
    ).result_rows
    assert len(log) == 1
    load_id, rows, checksum, loaded_at, max_recorded, max_ingested = log[0]
    assert (load_id, rows, checksum) == ("first-load", result.rows, result.checksum)
    # The queryable time comes after the newest event was received.
    assert loaded_at.replace(tzinfo=UTC) >= max(r["ingested_at"] for r in expected)
    assert max_recorded.replace(tzinfo=UTC) == max(r["recorded_at"] for r in expected)
    assert max_ingested.replace(tzinfo=UTC) == max(r["ingested_at"] for r in expected)
    assert hot.stage_tables(ch_client, ch_database) == []


def test_three_reruns_replace_the_hour_and_never_double_count(
    ch_client: Any, ch_database: str
) -> None:
    table = processed_hour(HOUR_A)
    # Small chunks: each run stages several parts, which must all be swapped together.
    results = [
        hot.load_hour(ch_client, HOUR_A, table, chunk_rows=25, database=ch_database)
        for _ in range(3)
    ]

    contents = [(r.rows, r.checksum) for r in results]
    assert contents == [contents[0]] * 3
    assert hot.hour_content(ch_client, HOUR_A, ch_database) == contents[0]
    assert (
        ch_client.query(f"SELECT count() FROM `{ch_database}`.vehicle_telemetry").result_rows[0][0]
        == table.num_rows
    )
    metrics = _metrics(ch_client, ch_database, HOUR_A)
    assert sum(m[0] for m in metrics.values()) == table.num_rows
    loads = ch_client.query(
        f"SELECT loads, load_id FROM `{ch_database}`.telemetry_loads_latest"
    ).result_rows
    assert loads == [(3, results[-1].load_id)]
    # Every row and every metrics row carries the last load's id: nothing of earlier runs is left.
    lineage = ch_client.query(
        f"SELECT DISTINCT load_id FROM `{ch_database}`.vehicle_telemetry "
        f"UNION ALL SELECT DISTINCT load_id FROM `{ch_database}`.vehicle_metrics_hourly"
    ).result_rows
    assert set(lineage) == {(results[-1].load_id,)}


def test_inserts_are_bounded_in_bytes_and_load_the_same_hour(
    ch_client: Any, ch_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = processed_hour(HOUR_A)
    whole = hot.load_hour(ch_client, HOUR_A, table, database=ch_database)
    sizes: list[int] = []
    send = ch_client.raw_insert

    def counting(stage: str, columns: Any, body: Any, **kwargs: Any) -> Any:
        data = b"".join(body)
        sizes.append(len(data))
        return send(stage, columns, data, **kwargs)

    monkeypatch.setattr(ch_client, "raw_insert", counting)
    # The warehouse buffers each Arrow INSERT whole: the byte limit is what bounds its memory.
    limit = 20_000
    batches = table.to_batches(max_chunksize=10)
    split = hot.load_hour(ch_client, HOUR_A, batches, database=ch_database, chunk_bytes=limit)
    assert split.rows == whole.rows == table.num_rows and split.checksum == whole.checksum
    assert hot.hour_content(ch_client, HOUR_A, ch_database) == (whole.rows, whole.checksum)
    # Several INSERTs, each ending with the 10-row batch that crosses the limit.
    assert len(sizes) > 2
    assert all(limit <= size < 2 * limit for size in sizes[:-1]) and sizes[-1] < 2 * limit


def test_loading_hour_b_leaves_hour_a_alone_and_an_empty_load_clears_b(
    ch_client: Any, ch_database: str
) -> None:
    hot.load_hour(ch_client, HOUR_A, processed_hour(HOUR_A), database=ch_database)
    a_before = hot.hour_content(ch_client, HOUR_A, ch_database)
    a_metrics = _metrics(ch_client, ch_database, HOUR_A)

    b_full = processed_hour(HOUR_B, seed=1)
    hot.load_hour(ch_client, HOUR_B, b_full, database=ch_database)
    b_fewer = b_full.slice(0, 50)
    hot.load_hour(ch_client, HOUR_B, b_fewer, database=ch_database)
    assert hot.hour_content(ch_client, HOUR_B, ch_database)[0] == 50
    _assert_metrics_equal(_metrics(ch_client, ch_database, HOUR_B), _expected_metrics(b_fewer))

    empty = hot.load_hour(ch_client, HOUR_B, [], database=ch_database)
    assert (empty.rows, empty.metrics_rows) == (0, 0)
    assert hot.hour_content(ch_client, HOUR_B, ch_database) == (0, 0)
    assert _metrics(ch_client, ch_database, HOUR_B) == {}

    assert hot.hour_content(ch_client, HOUR_A, ch_database) == a_before
    assert _metrics(ch_client, ch_database, HOUR_A) == a_metrics


def test_hourly_metrics_stay_exact_when_inserted_in_parts_and_merged(
    ch_client: Any, ch_database: str
) -> None:
    table = processed_hour(HOUR_A, vehicles=4, per_vehicle=60)
    hot.load_hour(ch_client, HOUR_A, table, database=ch_database)
    state = f"`{ch_database}`.vehicle_metrics_hourly_state"
    telemetry = f"`{ch_database}`.vehicle_telemetry"
    # Rebuild the hour's metrics as three separate inserts (three parts, three state rows
    # per vehicle), as an incremental producer would.
    ch_client.command(f"TRUNCATE TABLE {state}")
    for k in range(3):
        ch_client.command(
            f"INSERT INTO {state} "
            + hot.metrics_state_sql(
                f"(SELECT * FROM {telemetry} WHERE cityHash64(telemetry_id) % 3 = {k})"
            )
        )
    parts = f"SELECT count() FROM system.parts WHERE database = '{ch_database}' AND table = 'vehicle_metrics_hourly_state' AND active"
    state_rows = f"SELECT count() FROM {state}"
    assert ch_client.query(parts).result_rows[0][0] == 3
    assert ch_client.query(state_rows).result_rows[0][0] == 12
    direct = _direct_metrics(ch_client, ch_database, HOUR_A)
    _assert_metrics_equal(_metrics(ch_client, ch_database, HOUR_A), direct)

    ch_client.command(f"OPTIMIZE TABLE {state} FINAL")
    assert ch_client.query(parts).result_rows[0][0] == 1
    assert ch_client.query(state_rows).result_rows[0][0] == 4  # merged: one row per vehicle
    _assert_metrics_equal(_metrics(ch_client, ch_database, HOUR_A), direct)
    _assert_metrics_equal(direct, _expected_metrics(table))


def test_readers_never_see_a_partial_or_doubled_hour(
    warehouse_service: Any, ch_client: Any, ch_database: str
) -> None:
    small, large = processed_hour(HOUR_A, per_vehicle=10), processed_hour(HOUR_A, seed=2)
    hot.load_hour(ch_client, HOUR_A, small, database=ch_database)
    allowed = {_content_of(ch_client, ch_database, t) for t in (small, large)}
    seen: set[tuple[int, int]] = set()
    stop = threading.Event()

    def read() -> None:
        reader = warehouse_service.client(database=ch_database)
        try:
            while not stop.is_set():
                seen.add(hot.hour_content(reader, HOUR_A, ch_database))
        finally:
            reader.close()

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for i in range(6):
            hot.load_hour(
                ch_client, HOUR_A, small if i % 2 else large, chunk_rows=16, database=ch_database
            )
    finally:
        stop.set()
        thread.join(timeout=60)
    assert seen and seen <= allowed, seen - allowed


def test_a_load_rebuilds_metrics_of_its_day_that_lag_the_telemetry(
    warehouse_service: Any, ch_client: Any, ch_database: str
) -> None:
    a, b = processed_hour(HOUR_A), processed_hour(HOUR_B, seed=4)
    hot.load_hour(ch_client, HOUR_A, a, database=ch_database)
    # What a lost update between two loads of one day (or a crash between the telemetry
    # and the metrics swap) leaves: hour A's metrics built from other rows than A's telemetry.
    state = f"`{ch_database}`.vehicle_metrics_hourly_state"
    ch_client.command(
        f"INSERT INTO {state} SELECT vehicle_id, hour, 1, 1000, 1000, 0, 0, NULL, 0, 0, NULL, 0, "
        f"'stale' FROM {state}"
    )
    assert _metrics(ch_client, ch_database, HOUR_A) != _direct_metrics(
        ch_client, ch_database, HOUR_A
    )

    hot.load_hour(ch_client, HOUR_B, b, database=ch_database)
    _assert_metrics_equal(_metrics(ch_client, ch_database, HOUR_A), _expected_metrics(a))
    _assert_metrics_equal(_metrics(ch_client, ch_database, HOUR_B), _expected_metrics(b))

    # Hours of one day loaded at the same time: each swaps the whole day of metrics.
    tables = {
        HOUR_A + timedelta(hours=i): processed_hour(HOUR_A + timedelta(hours=i), seed=i)
        for i in range(4)
    }
    errors: list[BaseException] = []

    def load(hour: datetime) -> None:
        client = warehouse_service.client(database=ch_database)
        try:
            hot.load_hour(client, hour, tables[hour], database=ch_database)
        except BaseException as exc:
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=load, args=(h,)) for h in tables]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    for hour, table in tables.items():
        _assert_metrics_equal(_metrics(ch_client, ch_database, hour), _expected_metrics(table))


_CRASHING_LOADER = """
import sys, time
import pyarrow.parquet as pq
from datetime import datetime
from atlasmesh.settings import Settings
from atlasmesh.warehouse import telemetry
from atlasmesh.warehouse.client import connect

path, hour, database, scenario, signal_file = sys.argv[1:]
client = connect(Settings(), database=database)

def pause():
    with open(signal_file, "w") as f:
        f.write("paused")
    time.sleep(600)

def batches():
    for i, batch in enumerate(pq.ParquetFile(path).iter_batches(batch_size=40)):
        if scenario == "staging" and i == 2:
            pause()  # one INSERT is done, the next one is in flight, the rest is not sent
        yield batch

command = client.command
def command_then_pause(sql, *args, **kwargs):
    if scenario == "swap" and "REPLACE PARTITION" in sql and telemetry.METRICS_STATE_TABLE in sql:
        pause()  # the telemetry is swapped, the metrics are not
    return command(sql, *args, **kwargs)
client.command = command_then_pause

telemetry.load_hour(client, datetime.fromisoformat(hour), batches(), database=database, chunk_rows=40)
"""


@pytest.mark.parametrize("scenario", ["staging", "swap"])
def test_a_loader_killed_midway_leaves_whole_hours_and_the_rerun_heals(
    scenario: str, warehouse_service: Any, ch_client: Any, ch_database: str, tmp_path: Path
) -> None:
    old, new = processed_hour(HOUR_A, per_vehicle=10), processed_hour(HOUR_A, seed=3)
    hot.load_hour(ch_client, HOUR_A, old, database=ch_database)
    old_content = hot.hour_content(ch_client, HOUR_A, ch_database)
    old_metrics = _metrics(ch_client, ch_database, HOUR_A)
    pq.write_table(new, tmp_path / "new.parquet")
    signal_file = tmp_path / "paused"
    env = {**os.environ, "ATLASMESH_CLICKHOUSE_URL": warehouse_service.url}
    loader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _CRASHING_LOADER,
            str(tmp_path / "new.parquet"),
            HOUR_A.isoformat(),
            ch_database,
            scenario,
            str(signal_file),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while not signal_file.exists():
            assert loader.poll() is None, loader.stdout.read().decode() if loader.stdout else ""
            assert time.monotonic() < deadline, "the loader never reached its pause point"
            time.sleep(0.05)
        stages = hot.stage_tables(ch_client, ch_database)
        assert len(stages) == 2
        t_stage = next(s for s in stages if s.startswith(f"_stage__{hot.TELEMETRY_TABLE}__"))
        staged = ch_client.query(f"SELECT count() FROM `{ch_database}`.`{t_stage}`").result_rows
        assert staged[0][0] == (40 if scenario == "staging" else new.num_rows)
    finally:
        loader.send_signal(signal.SIGKILL)
        loader.wait(timeout=30)
        if loader.stdout:
            loader.stdout.close()

    # Readers see whole hours: the old rows, or (killed after the telemetry swap) the new
    # rows; the metrics swap never happened, so the metrics are the old ones.
    expected_rows = (
        old_content if scenario == "staging" else _content_of(ch_client, ch_database, new)
    )
    assert hot.hour_content(ch_client, HOUR_A, ch_database) == expected_rows
    assert _metrics(ch_client, ch_database, HOUR_A) == old_metrics

    rerun = hot.load_hour(ch_client, HOUR_A, new, database=ch_database)
    assert sorted(rerun.stale_stages_dropped) == sorted(stages)
    assert hot.stage_tables(ch_client, ch_database) == []
    assert hot.hour_content(ch_client, HOUR_A, ch_database) == _content_of(
        ch_client, ch_database, new
    )
    assert (rerun.rows, rerun.checksum) == _content_of(ch_client, ch_database, new)
    _assert_metrics_equal(_metrics(ch_client, ch_database, HOUR_A), _expected_metrics(new))


def test_a_range_load_swaps_each_hour_like_single_loads(ch_client: Any, ch_database: str) -> None:
    other_day = HOUR_A - timedelta(hours=5)  # the evening before: another metrics partition
    tables = {h: processed_hour(h, seed=i) for i, h in enumerate((other_day, HOUR_A, HOUR_B))}
    hot.load_hour(ch_client, HOUR_B, processed_hour(HOUR_B, seed=9), database=ch_database)
    empty = HOUR_B + timedelta(hours=1)
    hot.load_hour(ch_client, empty, processed_hour(empty), database=ch_database)
    inserts: list[str] = []
    send = ch_client.raw_insert

    def counting(table: str, *args: Any, **kwargs: Any) -> Any:
        inserts.append(table)
        return send(table, *args, **kwargs)

    ch_client.raw_insert = counting
    try:
        results = hot.load_hours(
            ch_client,
            {**tables, empty: PROCESSED_SCHEMA.empty_table()},
            database=ch_database,
            sources={HOUR_A: "lake:a"},
        )
    finally:
        del ch_client.raw_insert
    # One stage for every hour: one INSERT, as for a single small hour.
    assert len(inserts) == 1
    assert [r.hour for r in results] == [other_day, HOUR_A, HOUR_B, empty]
    assert len({r.load_id for r in results}) == 4
    for result in results[:3]:
        table = tables[result.hour]
        assert (result.rows, result.checksum) == _content_of(ch_client, ch_database, table)
        assert hot.hour_content(ch_client, result.hour, ch_database) == (
            result.rows,
            result.checksum,
        )
        assert result.metrics_rows == len(set(table.column("vehicle_id").to_pylist()))
        _assert_metrics_equal(
            _metrics(ch_client, ch_database, result.hour), _expected_metrics(table)
        )
    assert results[3].rows == results[3].metrics_rows == 0
    assert hot.hour_content(ch_client, empty, ch_database) == (0, 0)
    assert _metrics(ch_client, ch_database, empty) == {}
    logged = ch_client.query(
        f"SELECT hour, load_id, rows, checksum, metrics_rows, source "
        f"FROM `{ch_database}`.telemetry_loads_latest AS l "
        f"JOIN `{ch_database}`.telemetry_loads AS r USING (hour, load_id) ORDER BY hour"
    ).result_rows
    assert [(r[1], r[2], r[3], r[4]) for r in logged] == [
        (x.load_id, x.rows, x.checksum, x.metrics_rows) for x in results
    ]
    assert [r[5] for r in logged] == ["arrow", "lake:a", "arrow", "arrow"]
    assert hot.stage_tables(ch_client, ch_database) == []


def test_stale_stages_are_dropped_by_age_and_by_hour(ch_client: Any, ch_database: str) -> None:
    hot.ensure_schema(ch_client, ch_database)
    now = datetime.now(UTC)

    def stage(hour: datetime, age: timedelta) -> str:
        ms = int((now - age).timestamp() * 1000)
        name = f"_stage__vehicle_telemetry__h{hot.partition_id(hour)}__t{ms}__abc123"
        ch_client.command(
            f"CREATE TABLE `{ch_database}`.`{name}` AS `{ch_database}`.vehicle_telemetry"
        )
        return name

    same_hour = stage(HOUR_A, timedelta(seconds=5))
    abandoned = stage(HOUR_B, timedelta(hours=2))
    # A young stage of another hour may belong to a loader running right now: kept.
    running = stage(HOUR_B, timedelta(seconds=5))

    result = hot.load_hour(ch_client, HOUR_A, processed_hour(HOUR_A), database=ch_database)
    assert sorted(result.stale_stages_dropped) == sorted([same_hour, abandoned])
    assert hot.stage_tables(ch_client, ch_database) == [running]


def test_ddl_maps_every_processed_column_and_keeps_90_days(
    ch_client: Any, ch_database: str
) -> None:
    hot.ensure_schema(ch_client, ch_database)
    hot.ensure_schema(ch_client, ch_database)  # idempotent: every loader calls it
    ddl = ch_client.command(f"SHOW CREATE TABLE `{ch_database}`.vehicle_telemetry")
    assert "PARTITION BY toStartOfHour(recorded_at)" in ddl
    assert "ORDER BY (vehicle_id, recorded_at)" in ddl
    assert "TTL toStartOfHour(recorded_at) + toIntervalDay(90)" in ddl
    assert "ttl_only_drop_parts = 1" in ddl
    metrics_ddl = ch_client.command(
        f"SHOW CREATE TABLE `{ch_database}`.vehicle_metrics_hourly_state"
    )
    assert "AggregatingMergeTree" in metrics_ddl and "PARTITION BY toDate(hour)" in metrics_ddl
    assert "TTL hour + toIntervalDay(90)" in metrics_ddl
    types = dict(
        ch_client.query(
            "SELECT name, type FROM system.columns WHERE database = {db:String} "
            "AND table = 'vehicle_telemetry' AND default_kind != 'ALIAS'",
            parameters={"db": ch_database},
        ).result_rows
    )
    assert set(PROCESSED_SCHEMA.names) | {"load_id"} == set(types)
    assert types["diagnostic_codes"] == "Array(String)"
    assert types["recorded_at"] == types["ingested_at"] == "DateTime64(3, 'UTC')"
    assert types["latitude"] == types["longitude"] == "Float64"
    assert types["vehicle_id"] == types["telemetry_id"] == "UUID"
    assert types["operational_status"] == types["schema_version"] == "LowCardinality(String)"
    assert types["firmware_version"] == "LowCardinality(Nullable(String))"
    assert types["battery_level_percent"] == "Nullable(Float64)"


def test_the_seeds_location_pair_reads_as_latitude_longitude(
    ch_client: Any, ch_database: str
) -> None:
    from atlasmesh.warehouse.quarantine import quarantine_hour, quarantined_rows

    # A table (and its quarantine) created before the alias existed: the next load adds it.
    for statement in hot.schema_statements(ch_database):
        ch_client.command(statement.replace(f",\n    {hot.LOCATION_ALIAS}", ""))
    assert "location" not in ch_client.command(
        f"SHOW CREATE TABLE `{ch_database}`.vehicle_telemetry"
    )
    ch_client.command(
        f"CREATE TABLE `{ch_database}`.vehicle_telemetry_quarantine "
        f"AS `{ch_database}`.vehicle_telemetry"
    )
    table = processed_hour(HOUR_A)
    hot.load_hour(ch_client, HOUR_A, table, database=ch_database)
    rows = ch_client.query(
        f"SELECT location, latitude, longitude FROM `{ch_database}`.vehicle_telemetry"
    ).result_rows
    assert len(rows) == table.num_rows
    assert all(tuple(location) == (lat, lon) for location, lat, lon in rows)
    # Computed on read: not in SELECT *, so readers of every column see the processed schema.
    star = ch_client.query(f"SELECT * FROM `{ch_database}`.vehicle_telemetry LIMIT 1")
    assert "location" not in star.column_names
    # Partition swaps between tables that differ only by the alias still work.
    quarantine_hour(ch_client, HOUR_A, database=ch_database)
    assert quarantined_rows(ch_client, HOUR_A, database=ch_database) == table.num_rows
    assert hot.hour_content(ch_client, HOUR_A, ch_database)[0] == 0


def test_a_table_of_another_version_is_refused_with_a_fix(ch_client: Any, ch_database: str) -> None:
    ch_client.command(
        f"CREATE TABLE `{ch_database}`.vehicle_telemetry (vehicle_id UUID, "
        "recorded_at DateTime64(3), location Tuple(Float64, Float64)) "
        "ENGINE = MergeTree PARTITION BY toYYYYMM(recorded_at) ORDER BY (vehicle_id, recorded_at)"
    )
    with pytest.raises(hot.SchemaMismatchError) as err:
        hot.load_hour(ch_client, HOUR_A, processed_hour(HOUR_A), database=ch_database)
    message = str(err.value)
    assert "'latitude'" in message and "is missing" in message
    assert "unexpected column 'location'" in message
    assert "Fix:" in message


def test_bad_input_is_refused_clearly_and_changes_nothing(ch_client: Any, ch_database: str) -> None:
    good = processed_hour(HOUR_A)
    hot.load_hour(ch_client, HOUR_A, good, database=ch_database)
    before = hot.hour_content(ch_client, HOUR_A, ch_database)

    stray = pa.concat_tables([good, processed_hour(HOUR_B).slice(0, 1)])
    with pytest.raises(hot.LoadError, match=r"1 row\(s\) given for telemetry hour .* outside"):
        hot.load_hour(ch_client, HOUR_A, stray, database=ch_database)
    with pytest.raises(hot.LoadError, match="lack processed column"):
        hot.load_hour(ch_client, HOUR_A, good.drop_columns(["speed_kmh"]), database=ch_database)
    speed = good.column("speed_kmh").to_pylist()
    holed = good.set_column(
        good.schema.get_field_index("speed_kmh"),
        pa.field("speed_kmh", pa.float64()),
        pa.array([None, *speed[1:]], pa.float64()),
    )
    with pytest.raises(hot.LoadError, match=r"nulls in required column\(s\) \['speed_kmh'\]"):
        hot.load_hour(ch_client, HOUR_A, holed, database=ch_database)
    with pytest.raises(hot.LoadError, match="no time zone"):
        hot.load_hour(ch_client, HOUR_A.replace(tzinfo=None), good, database=ch_database)
    with pytest.raises(hot.LoadError, match="not the start of an hour"):
        hot.load_hour(ch_client, HOUR_A + timedelta(minutes=30), good, database=ch_database)

    assert hot.hour_content(ch_client, HOUR_A, ch_database) == before
    assert hot.stage_tables(ch_client, ch_database) == []


def test_load_from_the_lake_streams_the_processed_partition(
    ch_client: Any, ch_database: str, tmp_path: Path
) -> None:
    lake = Lake(f"file://{tmp_path}/lake")
    table = processed_hour(HOUR_A, vehicles=8, per_vehicle=50)
    folder = hot.processed_hour_path(HOUR_A)
    assert folder.endswith(f"date={HOUR_A:%Y-%m-%d}/hour={HOUR_A:%H}")
    for i, start in enumerate(range(0, table.num_rows, 150)):
        with lake.open(f"{folder}/part-{i}.parquet", "wb") as f:
            pq.write_table(table.slice(start, 150), f, row_group_size=64)

    result = hot.load_hour_from_lake(ch_client, lake, HOUR_A, database=ch_database)
    assert (result.rows, result.checksum) == _content_of(ch_client, ch_database, table)
    source = ch_client.query(f"SELECT source FROM `{ch_database}`.telemetry_loads").result_rows
    assert source == [(lake.uri(folder),)]

    with pytest.raises(hot.LoadError, match=r"no processed telemetry at .*run processing"):
        hot.load_hour_from_lake(ch_client, lake, HOUR_B, database=ch_database)
    lake.rm(folder, recursive=True)
    cleared = hot.load_hour_from_lake(
        ch_client, lake, HOUR_A, database=ch_database, missing_ok=True
    )
    assert cleared.rows == 0
    assert hot.hour_content(ch_client, HOUR_A, ch_database) == (0, 0)


def test_the_warehouse_reads_fitting_lake_files_itself_and_streams_the_rest(
    ch_client: Any, ch_database: str, tmp_path: Path
) -> None:
    lake = Lake(f"file://{tmp_path}/lake")
    folder = hot.processed_hour_path(HOUR_A)
    table = processed_hour(HOUR_A, vehicles=8, per_vehicle=50)

    def put(t: pa.Table, schema: pa.Schema | None = None) -> None:
        lake.rm(folder, recursive=True, missing_ok=True)
        with lake.open(f"{folder}/part-0.parquet", "wb") as f:
            pq.write_table(
                t if schema is None else pa.Table.from_arrays(t.columns, schema=schema), f
            )

    # Files as processing writes them: the service reads them, same rows as streaming them.
    put(table)
    direct = hot.load_hour_from_lake(ch_client, lake, HOUR_A, database=ch_database)
    assert direct.read_from_lake
    assert (direct.rows, direct.checksum) == _content_of(ch_client, ch_database, table)
    streamed = hot.load_hour(ch_client, HOUR_A, table, database=ch_database)
    assert not streamed.read_from_lake and streamed.checksum == direct.checksum

    # An older file without an optional column is read too: the column loads as NULL.
    no_odometer = table.drop_columns(["odometer_km"])
    put(no_odometer)
    older = hot.load_hour_from_lake(ch_client, lake, HOUR_A, database=ch_database)
    expected = table.set_column(
        table.schema.get_field_index("odometer_km"),
        table.schema.field("odometer_km"),
        pa.nulls(table.num_rows, pa.float64()),
    )
    assert older.read_from_lake
    assert (older.rows, older.checksum) == _content_of(ch_client, ch_database, expected)

    # A footer that does not prove the rows fit (required columns declared nullable) is
    # streamed and checked row by row: same content when they fit, the usual errors if not.
    loose = pa.schema([f.with_nullable(True) for f in PROCESSED_SCHEMA])
    put(table, loose)
    checked = hot.load_hour_from_lake(ch_client, lake, HOUR_A, database=ch_database)
    assert not checked.read_from_lake and checked.checksum == direct.checksum
    speed = table.column("speed_kmh").to_pylist()
    put(
        table.set_column(
            table.schema.get_field_index("speed_kmh"),
            "speed_kmh",
            pa.array([None, *speed[1:]], pa.float64()),
        ),
        loose,
    )
    with pytest.raises(hot.LoadError, match=r"nulls in required column\(s\) \['speed_kmh'\]"):
        hot.load_hour_from_lake(ch_client, lake, HOUR_A, database=ch_database)
    # A row of another hour: its statistics say so, and streaming names it.
    put(pa.concat_tables([table, processed_hour(HOUR_B).slice(0, 1)]))
    with pytest.raises(hot.LoadError, match=r"1 row\(s\) given for telemetry hour .* outside"):
        hot.load_hour_from_lake(ch_client, lake, HOUR_A, database=ch_database)
    assert hot.hour_content(ch_client, HOUR_A, ch_database) == (checked.rows, checked.checksum)
