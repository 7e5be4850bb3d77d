"""Upsert throughput of FleetCoreStore on SQLite and PostgreSQL, against a raw-driver baseline.

Baseline: the same rows, pre-serialised, bulk-inserted into the same empty table through the
raw driver (sqlite3 executemany / psycopg COPY) with no validation and no merge. Usage:
    .venv/bin/python bench/bench_fleet_core_upsert.py [ROWS] [RESULTS_JSON]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from atlasmesh.fleet_core import FleetCoreStore
from atlasmesh.fleet_core.db import timestamp_text

ROWS = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
RESULTS = Path(sys.argv[2] if len(sys.argv) > 2 else "bench/results/fleet_core_upsert.json")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def vehicles(fleets: list[str], status: str) -> list[dict[str, Any]]:
    return [
        {
            "vehicle_id": str(uuid.UUID(int=i + 1)),
            "fleet_id": fleets[i % len(fleets)],
            "asset_tag": f"AT-{i:07d}",
            "manufacturer": "Atlas",
            "model": "M1",
            "serial_number": f"SN-{i:09d}",
            "vehicle_profile": {"powertrain": "ev", "battery_kwh": 75.0},
            "current_status": status,
            "current_latitude": 24.4 + i * 1e-6,
            "current_longitude": 54.4,
            "last_seen": T0 - timedelta(seconds=i),
            "capabilities": {"autonomy": 4},
        }
        for i in range(ROWS)
    ]


def baseline(store: FleetCoreStore, rows: list[dict[str, Any]]) -> float:
    sqlite = store._engine.dialect.name == "sqlite"
    columns = [*rows[0], "created_at", "updated_at"]

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return json.dumps(value)
        if isinstance(value, datetime) and sqlite:
            return timestamp_text(value)
        return value

    stamp = plain(T0)
    tuples = [(*map(plain, row.values()), stamp, stamp) for row in rows]
    names = ", ".join(columns)
    with store._engine.begin() as connection:
        raw = connection.connection.driver_connection
        started = time.perf_counter()
        if sqlite:
            marks = ", ".join("?" for _ in columns)
            raw.executemany(f"INSERT INTO vehicles ({names}) VALUES ({marks})", tuples)
        else:
            with (
                raw.cursor() as cursor,
                cursor.copy(f"COPY fleet_core.vehicles ({names}) FROM STDIN") as copy,
            ):
                for row in tuples:
                    copy.write_row(row)
        elapsed = time.perf_counter() - started
        connection.exec_driver_sql("DELETE FROM vehicles")
    return elapsed


def timed(store: FleetCoreStore, rows: list[dict[str, Any]], expected: int) -> float:
    started = time.perf_counter()
    written = store.upsert("vehicles", rows)
    elapsed = time.perf_counter() - started
    assert written == expected, (written, expected)
    return elapsed


def run(url: str) -> dict[str, float]:
    with FleetCoreStore(url) as store:
        org = str(uuid.uuid4())
        store.upsert("organizations", [{"organization_id": org, "name": "o", "sector": "s"}])
        fleets = [str(uuid.uuid4()) for _ in range(100)]
        store.upsert(
            "fleets",
            [{"fleet_id": f, "organization_id": org, "name": f, "sector": "s"} for f in fleets],
        )
        base = baseline(store, vehicles(fleets, "idle"))
        insert = timed(store, vehicles(fleets, "idle"), ROWS)
        update = timed(store, vehicles(fleets, "driving"), ROWS)
        unchanged = timed(store, vehicles(fleets, "driving"), 0)
    return {
        "rows": ROWS,
        "baseline_bulk_insert_s": round(base, 3),
        "upsert_insert_s": round(insert, 3),
        "upsert_update_s": round(update, 3),
        "upsert_unchanged_s": round(unchanged, 3),
        "insert_rows_per_s": round(ROWS / insert),
        "insert_vs_baseline": round(insert / base, 2),
        "update_vs_baseline": round(update / base, 2),
    }


def main() -> None:
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["sqlite"] = run(f"sqlite:///{Path(tmp) / 'bench.db'}")
    name = f"atlasmesh_bench_{uuid.uuid4().hex[:8]}"
    admin = "host=127.0.0.1 user=postgres dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    try:
        results["postgresql"] = run(f"postgresql://postgres@127.0.0.1:5432/{name}")
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f"DROP DATABASE {name} WITH (FORCE)")
    print(f"{'metric':<24}{'sqlite':>12}{'postgresql':>14}")
    for key in results["sqlite"]:
        print(f"{key:<24}{results['sqlite'][key]:>12}{results['postgresql'][key]:>14}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
