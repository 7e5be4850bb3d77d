"""Benchmark of the embedded warehouse service against in-process chDB.

Measures, in one run: the per-query time of a trivial `SELECT 1` in-process (chDB directly and
clickhouse-connect's `chdb://` client) and over HTTP to the service (clickhouse-connect and a raw
keep-alive request), and `insert_arrow` of telemetry-like rows over HTTP against clickhouse-connect's
in-process `chdb://` client on the same table. Prints a table; writes bench/results/warehouse.json.

    .venv/bin/python bench/bench_warehouse.py [--rows 1000000] [--queries 2000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
from _process import free_port

from atlasmesh.settings import Settings
from atlasmesh.warehouse import service

RESULTS = Path(__file__).parent / "results" / "warehouse.json"
DDL = """
CREATE TABLE IF NOT EXISTS vehicle_telemetry (
    vehicle_id UUID,
    recorded_at DateTime64(3, 'UTC'),
    speed_kmh Float32,
    heading_degrees Float32,
    battery_level_percent Nullable(Float32),
    operational_status LowCardinality(String),
    sensor_readings String
) ENGINE = MergeTree PARTITION BY toYYYYMM(recorded_at) ORDER BY (vehicle_id, recorded_at)
"""


def telemetry(rows: int, seed: int = 7) -> pa.Table:
    """Telemetry-like rows: 1,000 vehicles, millisecond timestamps, a JSON sensor column."""
    rng = np.random.default_rng(seed)
    vehicles = np.array([str(uuid.UUID(int=int(v))) for v in rng.integers(1, 2**63, 1000)])
    battery = rng.random(rows).astype("float32") * 100
    return pa.table(
        {
            "vehicle_id": vehicles[rng.integers(0, 1000, rows)],
            "recorded_at": pa.array(
                1_793_000_000_000 + np.arange(rows) * 37, pa.timestamp("ms", tz="UTC")
            ),
            "speed_kmh": (rng.random(rows) * 130).astype("float32"),
            "heading_degrees": (rng.random(rows) * 360).astype("float32"),
            "battery_level_percent": pa.array(battery, mask=rng.random(rows) < 0.3),
            "operational_status": np.array(["driving", "idle", "charging", "parked"])[
                rng.integers(0, 4, rows)
            ],
            "sensor_readings": [
                f'{{"motor_temp_c": {t:.1f}, "brake_pad_mm": 9.5}}' for t in rng.random(rows) * 90
            ],
        }
    )


def interleaved_ms(variants: dict, batch: int, rounds: int) -> dict[str, float]:
    """Median per-call ms of each variant, measured in alternating batches so that a change of
    machine load during the run hits every variant alike."""
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for fn in variants.values():
        for _ in range(20):
            fn()
    for _ in range(rounds):
        for name, fn in variants.items():
            started = time.perf_counter()
            for _ in range(batch):
                fn()
            samples[name].append((time.perf_counter() - started) / batch * 1000)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=2000, help="trivial queries per variant")
    parser.add_argument("--repeat", type=int, default=3, help="insert runs per client")
    args = parser.parse_args()

    import clickhouse_connect
    from chdb import _chdb

    table = telemetry(args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp) / "home", warehouse_port=free_port(), clickhouse_url="")
        url = service.ensure_running(settings)
        try:
            http_client = clickhouse_connect.get_client(
                host="127.0.0.1", port=settings.warehouse_port
            )
            inproc_client = clickhouse_connect.get_client(dsn=f"chdb://{Path(tmp) / 'inproc'}")
            raw_engine = _chdb.connect(str(Path(tmp) / "inproc"))
            conn = http.client.HTTPConnection("127.0.0.1", settings.warehouse_port)

            def raw_http() -> None:
                # The same output format as the in-process baseline, so only the transport differs.
                conn.request("POST", "/", body=b"SELECT 1 FORMAT Native")
                conn.getresponse().read()

            lat = interleaved_ms(
                {
                    "chdb_in_process": lambda: raw_engine.query("SELECT 1", "Native"),
                    "cc_chdb_in_process": lambda: inproc_client.query("SELECT 1"),
                    "cc_http": lambda: http_client.query("SELECT 1"),
                    "raw_http": raw_http,
                },
                batch=50,
                rounds=max(1, args.queries // 50),
            )

            def insert_seconds(client) -> float:
                client.command("DROP TABLE IF EXISTS vehicle_telemetry")
                client.command(DDL)
                started = time.perf_counter()
                summary = client.insert_arrow("vehicle_telemetry", table)
                elapsed = time.perf_counter() - started
                assert client.command("SELECT count() FROM vehicle_telemetry") == args.rows, summary
                return elapsed

            inproc_s, http_s = [], []
            for _ in range(args.repeat):  # alternating, for the same reason as the latencies
                inproc_s.append(insert_seconds(inproc_client))
                http_s.append(insert_seconds(http_client))
        finally:
            service.stop(settings)

    inproc_rate = args.rows / statistics.median(inproc_s)
    http_rate = args.rows / statistics.median(http_s)
    results = {
        "url": url,
        # Other work on the machine inflates round trips far more than in-process calls.
        "load_average_1m": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "rows": args.rows,
        "select_1_ms": {k: round(v, 3) for k, v in lat.items()},
        "select_1_overhead_ms": {
            "cc_http_minus_cc_chdb": round(lat["cc_http"] - lat["cc_chdb_in_process"], 3),
            "raw_http_minus_chdb": round(lat["raw_http"] - lat["chdb_in_process"], 3),
        },
        "select_1_ratio_cc_http_to_cc_chdb": round(lat["cc_http"] / lat["cc_chdb_in_process"], 3),
        "insert_arrow_seconds": {"cc_chdb_in_process": inproc_s, "cc_http": http_s},
        "insert_arrow_rows_per_s": {
            "cc_chdb_in_process": round(inproc_rate),
            "cc_http": round(http_rate),
        },
        "insert_arrow_ratio_http_to_in_process": round(http_rate / inproc_rate, 3),
        "goals": {"overhead_ms_max": 1.5, "insert_ratio_min": 0.9},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")

    print(f"{'measure':44} {'value':>12}")
    for name, value in lat.items():
        print(f"{'SELECT 1, ' + name + ' (ms)':44} {value:12.3f}")
    for name, value in results["select_1_overhead_ms"].items():
        print(f"{'overhead ' + name + ' (ms)':44} {value:12.3f}")
    print(f"{'insert_arrow in-process chdb:// (rows/s)':44} {inproc_rate:12,.0f}")
    print(f"{'insert_arrow over HTTP (rows/s)':44} {http_rate:12,.0f}")
    print(
        f"{'insert_arrow ratio HTTP / in-process':44} {results['insert_arrow_ratio_http_to_in_process']:12.3f}"
    )
    print(
        f"load average {results['load_average_1m']} on {results['cpus']} CPUs; results: {RESULTS}"
    )


if __name__ == "__main__":
    main()
