"""The embedded warehouse service: lifecycle, and unmodified clickhouse-connect against it."""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pyarrow as pa
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from atlasmesh.settings import Settings
from atlasmesh.warehouse import service
from tests.fixtures.warehouse import free_port, start_service

pytestmark = pytest.mark.integration

TELEMETRY_DDL = """
CREATE TABLE vehicle_telemetry (
    vehicle_id UUID,
    recorded_at DateTime64(3, 'UTC'),
    speed_kmh Float32,
    battery_level_percent Nullable(Float32),
    diagnostic_codes Array(String),
    operational_status LowCardinality(String)
) ENGINE = MergeTree ORDER BY (vehicle_id, recorded_at)
"""


def _rows(n: int) -> list[list]:
    base = dt.datetime(2026, 11, 1, 12, tzinfo=dt.UTC)
    return [
        [
            uuid.UUID(int=i % 7 + 1),
            base + dt.timedelta(milliseconds=1500 * i),
            float(i % 120),
            None if i % 5 == 0 else float(i % 100),
            ["P0A80"] if i % 3 == 0 else [],
            "driving" if i % 2 else "idle",
        ]
        for i in range(n)
    ]


COLUMNS = [
    "vehicle_id",
    "recorded_at",
    "speed_kmh",
    "battery_level_percent",
    "diagnostic_codes",
    "operational_status",
]


# -- lifecycle ---------------------------------------------------------------------------------


def test_status_reports_the_url_and_a_second_serve_reuses_the_service(warehouse_service):
    assert service.status(warehouse_service.settings) == warehouse_service.url
    record = json.loads((warehouse_service.home / "warehouse.pid").read_text())
    assert service.serve(warehouse_service.settings) == warehouse_service.url
    assert service.ensure_running(warehouse_service.settings) == warehouse_service.url
    assert (
        json.loads((warehouse_service.home / "warehouse.pid").read_text())["pid"] == record["pid"]
    )


def test_a_stale_pidfile_is_cleaned_up(tmp_path):
    settings = Settings(home=tmp_path, warehouse_port=free_port(), clickhouse_url="")
    pidfile = tmp_path / "warehouse.pid"
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)
    pidfile.write_text(json.dumps({"pid": dead, "port": 1, "url": "http://127.0.0.1:1"}))
    assert service.status(settings) is None
    assert not pidfile.exists()
    assert service.stop(settings) is False


def test_a_configured_server_url_is_used_and_nothing_is_started(tmp_path):
    settings = Settings(home=tmp_path, clickhouse_url="http://127.0.0.1:9")
    assert service.ensure_running(settings) == "http://127.0.0.1:9"
    assert service.status(settings) is None
    assert not (tmp_path / "warehouse.pid").exists()
    with pytest.raises(service.WarehouseServiceError, match="ATLASMESH_CLICKHOUSE_URL"):
        service.serve(settings)


def test_a_busy_port_fails_with_the_log_path(tmp_path, warehouse_service):
    settings = Settings(home=tmp_path, warehouse_port=warehouse_service.port, clickhouse_url="")
    with pytest.raises(service.WarehouseServiceError) as err:
        service.ensure_running(settings)
    assert "warehouse.log" in str(err.value)
    assert "Address already in use" in str(err.value)


def test_stop_lets_running_queries_finish_and_keeps_the_data(tmp_path):
    svc = start_service(tmp_path)
    client = svc.client()
    client.command("CREATE TABLE kept (n UInt64) ENGINE = MergeTree ORDER BY n")
    client.insert("kept", [[i] for i in range(1000)], column_names=["n"])
    slow: dict = {}

    def run_slow() -> None:
        slow["rows"] = svc.client().query("SELECT sleep(1) AS s").result_rows

    thread = threading.Thread(target=run_slow)
    thread.start()
    time.sleep(0.3)
    assert service.stop(svc.settings, timeout=30) is True
    thread.join()
    assert slow["rows"] == [(0,)]
    assert service.status(svc.settings) is None
    assert not (tmp_path / "warehouse.pid").exists()
    assert "stopped cleanly" in (tmp_path / "logs" / "warehouse.log").read_text()

    restarted = start_service(tmp_path)
    try:
        assert restarted.client().command("SELECT sum(n) FROM kept") == sum(range(1000))
    finally:
        service.stop(restarted.settings)


# -- clickhouse-connect --------------------------------------------------------------------------


def test_insert_and_query_round_trip_every_api(ch_client):
    ch_client.command(TELEMETRY_DDL)
    rows = _rows(50)
    summary = ch_client.insert("vehicle_telemetry", rows, column_names=COLUMNS)
    assert summary.written_rows == 50

    result = ch_client.query("SELECT * FROM vehicle_telemetry ORDER BY recorded_at")
    # clickhouse-connect hands UTC timestamps back naive, as it does against a real server.
    assert [list(r) for r in result.result_rows] == [
        [r[0], r[1].replace(tzinfo=None), *r[2:]] for r in rows
    ]

    frame = ch_client.query_df("SELECT count() AS n, avg(speed_kmh) AS v FROM vehicle_telemetry")
    assert frame["n"].iloc[0] == 50
    assert frame["v"].iloc[0] == pytest.approx(sum(r[2] for r in rows) / 50)

    table = ch_client.query_arrow(
        "SELECT vehicle_id, speed_kmh FROM vehicle_telemetry ORDER BY recorded_at"
    )
    assert table.num_rows == 50
    assert table.column("speed_kmh").to_pylist() == [r[2] for r in rows]

    arrow_rows = pa.table(
        {
            "vehicle_id": [str(uuid.UUID(int=99))] * 3,
            "recorded_at": pa.array(
                [1_800_000_000_000 + i for i in range(3)], pa.timestamp("ms", tz="UTC")
            ),
            "speed_kmh": pa.array([1.0, 2.0, 3.0], pa.float32()),
            "battery_level_percent": pa.array([None, 50.0, 60.0], pa.float32()),
            "diagnostic_codes": [[], ["P0300"], []],
            "operational_status": ["parked"] * 3,
        }
    )
    assert ch_client.insert_arrow("vehicle_telemetry", arrow_rows).written_rows == 3

    frame = pd.DataFrame({c: [r[i] for r in _rows(4)] for i, c in enumerate(COLUMNS)})
    assert ch_client.insert_df("vehicle_telemetry", frame).written_rows == 4
    assert ch_client.command("SELECT count() FROM vehicle_telemetry") == 57
    assert (
        ch_client.command(
            f"SELECT countIf(vehicle_id = '{uuid.UUID(int=99)}') FROM vehicle_telemetry"
        )
        == 3
    )


def test_engine_errors_reach_the_client_with_their_code(ch_client):
    with pytest.raises(DatabaseError) as err:
        ch_client.query("SELECT * FROM no_such_table")
    assert err.value.code == 60
    assert "UNKNOWN_TABLE" in str(err.value)
    with pytest.raises(DatabaseError) as err:
        ch_client.command("SELEC 1")
    assert err.value.code == 62
    # The session survives the errors.
    assert ch_client.command("SELECT 42") == 42


def test_session_temporary_tables_are_private_to_their_session(warehouse_service, ch_database):
    one = warehouse_service.client(database=ch_database)
    two = warehouse_service.client(database=ch_database)
    one.command("CREATE TEMPORARY TABLE scratch (v UInt8)")
    one.command("INSERT INTO scratch VALUES (1), (2)")
    assert one.command("SELECT sum(v) FROM scratch") == 3
    with pytest.raises(DatabaseError) as err:
        two.query("SELECT * FROM scratch")
    assert err.value.code == 60


def test_concurrent_use_of_one_session_is_refused(warehouse_service, ch_database):
    session_id = str(uuid.uuid4())
    first = warehouse_service.client(database=ch_database, session_id=session_id)
    second = warehouse_service.client(database=ch_database, session_id=session_id)
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(first.query, "SELECT sleep(1)")
        time.sleep(0.3)
        with pytest.raises(DatabaseError) as err:
            second.query("SELECT 1")
        assert slow.result().result_rows == [(0,)]
    assert err.value.code == 373
    assert "locked" in str(err.value)
    assert second.command("SELECT 2") == 2  # free again once the first query ended


def test_eight_concurrent_clients_run_in_parallel(warehouse_service, ch_database):
    setup = warehouse_service.client(database=ch_database)
    setup.command("CREATE TABLE hits (client UInt8, n UInt32) ENGINE = MergeTree ORDER BY client")

    def work(i: int) -> tuple[int, float]:
        client = warehouse_service.client(database=ch_database)
        client.insert("hits", [[i, n] for n in range(1000)], column_names=["client", "n"])
        started = time.perf_counter()
        client.query("SELECT sleep(0.75)")
        return client.command(
            f"SELECT count() FROM hits WHERE client = {i}"
        ), time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(work, range(8)))
    wall = time.perf_counter() - started
    assert [count for count, _ in results] == [1000] * 8
    assert setup.command("SELECT count() FROM hits") == 8000
    # Eight 0.75 s sleeps one after another would take 6 s: they overlap.
    assert wall < 4.0


def test_readonly_setting_refuses_writes(warehouse_service, ch_database):
    client = warehouse_service.client(database=ch_database, settings={"readonly": 1})
    assert client.command("SELECT 1") == 1
    with pytest.raises(DatabaseError) as err:
        client.command("CREATE TABLE nope (a UInt8) ENGINE = Memory")
    assert err.value.code == 164


def test_compressed_transfers_both_ways(warehouse_service, ch_database):
    for method in ("lz4", "zstd", "gzip"):
        client = warehouse_service.client(database=ch_database, compress=method)
        client.command(
            f"CREATE TABLE c_{method} (n UInt64, s String) ENGINE = MergeTree ORDER BY n"
        )
        client.insert(
            f"c_{method}", [[i, "x" * (i % 50)] for i in range(20_000)], column_names=["n", "s"]
        )
        result = client.query(f"SELECT n, s FROM c_{method} ORDER BY n")
        assert len(result.result_rows) == 20_000
        assert result.result_rows[49] == (49, "x" * 49)


def test_query_ids_are_echoed_and_must_be_unique_while_running(warehouse_service, ch_database):
    client = warehouse_service.client(database=ch_database)
    assert client.query("SELECT 1", settings={"query_id": "fixed-id-1"}).query_id == "fixed-id-1"
    other = warehouse_service.client(database=ch_database)
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(client.query, "SELECT sleep(1)", settings={"query_id": "dup-id"})
        time.sleep(0.3)
        with pytest.raises(DatabaseError) as err:
            other.query("SELECT 1", settings={"query_id": "dup-id"})
        slow.result()
    assert err.value.code == 216


def test_large_results_stream_in_blocks(ch_client):
    seen = 0
    with ch_client.query_row_block_stream(
        "SELECT number, toString(number) FROM numbers(300000)"
    ) as stream:
        for block in stream:
            seen += len(block)
    assert seen == 300_000


def test_wrong_password_is_refused(warehouse_service_auth):
    import clickhouse_connect

    assert warehouse_service_auth.client().command("SELECT 1") == 1
    with pytest.raises(DatabaseError) as err:
        clickhouse_connect.get_client(
            host="127.0.0.1", port=warehouse_service_auth.port, username="analyst", password="wrong"
        )
    assert err.value.code == 516
    log = (warehouse_service_auth.home / "logs" / "warehouse.log").read_text()
    assert "s3cret-pass" not in log


def test_a_runaway_query_is_cut_off_and_does_not_freeze_others(warehouse_service_auth):
    runaway = warehouse_service_auth.client()
    bystander = warehouse_service_auth.client()
    with ThreadPoolExecutor(1) as pool:
        started = time.perf_counter()
        future = pool.submit(
            runaway.query, "SELECT count() FROM system.numbers WHERE sipHash64(number) = 1"
        )
        time.sleep(0.5)
        quick = time.perf_counter()
        assert bystander.command("SELECT 7") == 7
        assert time.perf_counter() - quick < 1.0
        with pytest.raises(DatabaseError) as err:
            future.result()
        elapsed = time.perf_counter() - started
    assert err.value.code == 159
    assert "per-request limit" in str(err.value)
    assert elapsed < 6.0


def test_sqlalchemy_http_dialect_reads_and_reflects(warehouse_service, ch_client, ch_database):
    import sqlalchemy as sa

    ch_client.command("CREATE TABLE readings (v UInt32, s String) ENGINE = MergeTree ORDER BY v")
    ch_client.insert("readings", [[i, f"r{i}"] for i in range(100)], column_names=["v", "s"])
    url = (
        f"clickhouse+http://default:@127.0.0.1:{warehouse_service.port}/{ch_database}?protocol=http"
    )
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(), max(v) FROM readings")).one() == (100, 99)
        columns = {c["name"] for c in sa.inspect(conn).get_columns("readings")}
    assert columns == {"v", "s"}
