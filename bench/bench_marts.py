"""Benchmark: the operational-question marts against polars over the processed Parquet.

Data: telemetry generated directly as processed Parquet (numpy + pyarrow, vectorised, no
JSON): every vehicle follows a plan of shifts made of drives (speed a smooth arch, position
moving along a heading at that speed, out and back), short stops and the odd rest, parked
outside its shift; battery or fuel drains with distance. The fleet-core tables come from
the simulator's world (organizations, fleets, vehicles with their `vehicle_profile`,
routes, ...) plus trips, alerts and maintenance drawn from the same plan, written to a
SQLite fleet-core database and extracted into the warehouse with `extract_all`.

Steps, all against one fresh embedded warehouse service (data loaded a day ahead of builds):
1. a first `dbt build` of day 0 (every model and data test; unit tests, whose fixtures a
   window filters away, are left to the test suite);
2. incremental builds (`int_telemetry_points_sessionised+ fct_trips+`, window vars): day 1
   (1 day of history), days 2-3 together (twice the new rows), days 4 to the last but one,
   day 1 again with all history built (same day, same as_of, 1 vs D-1 days of history), an
   empty day (what a build costs without new rows), the last day;
3. optionally `dbt build --full-refresh` over everything;
4. each operational question: `SELECT *` of its mart (median of several runs) against
   polars scanning the processed Parquet lazily and computing the same answer.
Every build records its seconds, dbt's per-model seconds (run_results.json) and, from
EXPLAIN ESTIMATE, the point-table rows each node reads: a measure the machine's load cannot
blur. `--bulk-load` prepares the hot path with one INSERT ... SELECT FROM file() per day
(same rows and hourly metrics as `load_hour_from_lake`, load_id aside) instead of hour loads.

Run: `.venv/bin/python bench/bench_marts.py --rows 2_000_000 --vehicles 50 --interval-s 10`;
at 100 M rows: `--rows 100_000_000 --vehicles 1000 --interval-s 5 --bulk-load --polars-runs 1
--no-full-refresh`. Results go to bench/results/marts.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULTS = REPO / "bench" / "results" / "marts.json"

HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
DRIVE, STOP, PARKED = 1, 2, 0
STATUS = np.array(["parked", "driving", "idle"])
KM_PER_DEG_LAT = 111.32
MIB = 1 << 20


# --- the plan: what every vehicle does, as segments ----------------------------------------


def make_plan(world: Any, days: int, seed: int) -> dict[str, np.ndarray]:
    """Per-vehicle segments (parked / drive / stop) covering every day, with start state."""
    rng = np.random.default_rng(seed)
    cols: dict[str, list] = {k: [] for k in ("v", "start", "end", "kind", "vmax", "heading")}
    cols.update(day=[], load=[])
    for vehicle in world.vehicles:
        # A few long-haul vehicles: long shifts, short halts (the 10-hour and no-rest questions).
        long_haul = rng.random() < 0.1
        t = -86_400.0
        heading = rng.uniform(0, 2 * math.pi)
        for day in range(-1, days + 1):
            shift_start = day * 86_400 + rng.uniform(4, 8) * 3600
            shift_end = (
                shift_start + (rng.uniform(14, 17) if long_haul else rng.uniform(8, 12)) * 3600
            )
            cols["v"].append(vehicle.index)
            cols["start"].append(t)
            cols["end"].append(shift_start)
            cols["kind"].append(PARKED)
            cols["vmax"].append(0.0)
            cols["heading"].append(0.0)
            cols["day"].append(max(day, -1))
            cols["load"].append(0.0)
            t = shift_start
            load = rng.uniform(0.1, 0.9) * vehicle.model.max_load_kg
            while t < shift_end:
                drive = rng.uniform(10, 45) * 60 * (2.0 if long_haul else 1.0)
                heading = (heading + math.pi) % (2 * math.pi)
                halt = (
                    rng.uniform(25, 40) * 60
                    if rng.random() < (0.05 if long_haul else 0.2)
                    else rng.uniform(0.5, 12) * 60
                )
                for kind, length, vmax in ((DRIVE, drive, rng.uniform(35, 90)), (STOP, halt, 0.0)):
                    cols["v"].append(vehicle.index)
                    cols["start"].append(t)
                    cols["end"].append(t + length)
                    cols["kind"].append(kind)
                    cols["vmax"].append(vmax)
                    cols["heading"].append(heading)
                    cols["day"].append(day)
                    cols["load"].append(load)
                    t += length
    plan = {k: np.asarray(v) for k, v in cols.items()}
    plan["end"][np.r_[plan["v"][1:] != plan["v"][:-1], True]] = 1e9  # last one never ends
    km = np.where(
        plan["kind"] == DRIVE,
        plan["vmax"] / 3600 * (plan["end"] - plan["start"]) * 2 / math.pi,
        0.0,
    )
    km[np.isinf(km) | (km > 1e6)] = 0.0
    first = np.r_[True, plan["v"][1:] != plan["v"][:-1]]
    group = np.cumsum(first) - 1
    cum = np.cumsum(km)
    offset = (cum - km)[first][group]
    plan["cum_km"] = cum - km - offset  # km driven before the segment starts
    depot = np.array([world.fleets[v.fleet].depot for v in world.vehicles])
    lat0, lon0 = depot[plan["v"], 0], depot[plan["v"], 1]
    # Out and back: a drive goes `km` along its heading; the next one reverses it.
    dn = np.where(plan["kind"] == DRIVE, km * np.cos(plan["heading"]), 0.0)
    de = np.where(plan["kind"] == DRIVE, km * np.sin(plan["heading"]), 0.0)
    north = np.cumsum(dn) - dn
    east = np.cumsum(de) - de
    north -= north[first][group]
    east -= east[first][group]
    plan["lat0"] = lat0 + north / KM_PER_DEG_LAT
    plan["lon0"] = lon0 + east / (KM_PER_DEG_LAT * np.cos(np.radians(lat0)))
    # Energy: charged each night to a random level, then drained with distance.
    n_vehicles = len(world.vehicles)
    day_start = rng.uniform(70, 100, size=(n_vehicles, days + 3))
    per_km = rng.uniform(0.25, 0.5, size=n_vehicles)
    plan["e_day"] = day_start[plan["v"], plan["day"] + 1]
    day_key = plan["v"] * 1000 + plan["day"]
    new_day = np.r_[True, day_key[1:] != day_key[:-1]]
    plan["km_day0"] = plan["cum_km"][new_day][np.cumsum(new_day) - 1]
    plan["per_km"] = per_km[plan["v"]]
    plan["key"] = plan["v"] * 1e7 + plan["start"]
    return plan


def uuid_strings(hi: np.ndarray, lo: np.ndarray) -> pa.Array:
    """UUID-formatted strings of two uint64 arrays, built as one byte buffer (no Python loop)."""
    shifts = np.arange(60, -4, -4, dtype=np.uint64)
    digits = np.concatenate(
        [HEX[(hi[:, None] >> shifts) & 0xF], HEX[(lo[:, None] >> shifts) & 0xF]], axis=1
    )
    out = np.full((len(hi), 36), ord("-"), dtype=np.uint8)
    for a, b, c in ((0, 8, 0), (9, 13, 8), (14, 18, 12), (19, 23, 16), (24, 36, 20)):
        out[:, a:b] = digits[:, c : c + b - a]
    offsets = np.arange(0, 36 * (len(hi) + 1), 36, dtype=np.int32)
    return pa.StringArray.from_buffers(len(hi), pa.py_buffer(offsets), pa.py_buffer(out.tobytes()))


def hour_table(
    world: Any, plan: dict[str, np.ndarray], origin: datetime, hour: int, interval_s: float
) -> pa.Table:
    """One event hour of processed telemetry for every vehicle, in PROCESSED_SCHEMA."""
    from atlasmesh.telemetry.registry import PROCESSED_SCHEMA

    n_vehicles = len(world.vehicles)
    per = round(3600 / interval_s)
    rng = np.random.default_rng(hour)
    phase = (np.arange(n_vehicles) * 7919 % max(int(interval_s * 1000), 1)) / 1000.0
    v = np.repeat(np.arange(n_vehicles), per)
    t = hour * 3600 + np.tile(np.arange(per) * interval_s, n_vehicles) + phase[v]
    i = np.searchsorted(plan["key"], v * 1e7 + t, side="right") - 1
    kind = plan["kind"][i]
    length = plan["end"][i] - plan["start"][i]
    u = np.clip((t - plan["start"][i]) / length, 0, 1)
    driving = kind == DRIVE
    vmax = plan["vmax"][i]
    n = len(t)
    speed = np.where(
        driving,
        np.maximum(vmax * np.sin(math.pi * u) + rng.normal(0, 1.0, n), 0.0),
        np.abs(rng.normal(0, 0.4, n)),  # GNSS jitter of a standing vehicle: under 3 km/h
    )
    km = np.where(driving, vmax / 3600 * length / math.pi * (1 - np.cos(math.pi * u)), 0.0)
    heading = plan["heading"][i]
    lat0 = plan["lat0"][i]
    lat = lat0 + km * np.cos(heading) / KM_PER_DEG_LAT
    lon = plan["lon0"][i] + km * np.sin(heading) / (KM_PER_DEG_LAT * np.cos(np.radians(lat0)))
    total_km = plan["cum_km"][i] + km
    level = np.maximum(plan["e_day"][i] - plan["per_km"][i] * (total_km - plan["km_day0"][i]), 3.0)
    ev = np.array([w.model.powertrain == "ev" for w in world.vehicles])[v]
    t_ms = (origin.timestamp() * 1000 + np.round(t * 1000)).astype(np.int64)
    has_dtc = rng.random(n) < 2e-4
    dtc = pa.ListArray.from_arrays(
        pa.array(np.r_[0, np.cumsum(has_dtc)].astype(np.int32)),
        pa.array(np.full(int(has_dtc.sum()), "P0A80", dtype=object), pa.string()),
    )
    vehicle_ids = np.array([w.vehicle_id for w in world.vehicles], dtype=object)
    ts = pa.timestamp("ms", tz="UTC")
    columns: dict[str, Any] = {
        "telemetry_id": uuid_strings(v.astype(np.uint64), t_ms.astype(np.uint64)),
        "vehicle_id": pa.DictionaryArray.from_arrays(
            pa.array(v.astype(np.int32)), pa.array(vehicle_ids, pa.string())
        ).cast(pa.string()),
        "recorded_at": pa.array(t_ms, ts),
        "ingested_at": pa.array(t_ms + 2000, ts),
        "latitude": lat,
        "longitude": lon,
        "speed_kmh": np.round(speed, 2),
        "heading_degrees": np.degrees(heading) % 360,
        "battery_level_percent": pa.array(level, mask=~ev),
        "fuel_level_percent": pa.array(level, mask=ev),
        "odometer_km": 10_000 + total_km,
        "firmware_version": pa.nulls(n, pa.string()),
        "sensor_readings": pa.array(np.full(n, "{}", dtype=object), pa.string()),
        "diagnostic_codes": dtc,
        "environmental_conditions": pa.nulls(n, pa.string()),
        "operational_status": pa.DictionaryArray.from_arrays(
            pa.array(kind.astype(np.int32)), pa.array(STATUS)
        ).cast(pa.string()),
        "custom_data": pa.nulls(n, pa.string()),
        "schema_version": pa.array(np.full(n, "1.0.0", dtype=object), pa.string()),
        "load_kg": plan["load"][i],
        "energy_rate": np.where(driving, speed * 0.2, 0.0),
        "source_file": pa.array(np.full(n, "bench", dtype=object), pa.string()),
        "line_number": np.arange(n, dtype=np.int64),
    }
    arrays = [
        columns[f.name] if f.name in columns else pa.nulls(n, f.type) for f in PROCESSED_SCHEMA
    ]
    return pa.Table.from_arrays(
        [pa.array(a, f.type) if not isinstance(a, pa.Array) else a.cast(f.type)
         for a, f in zip(arrays, PROCESSED_SCHEMA, strict=True)],
        schema=PROCESSED_SCHEMA,
    )  # fmt: skip


# --- fleet core --------------------------------------------------------------------------


def fleet_core_rows(
    world: Any, plan: dict[str, np.ndarray], origin: datetime, end: datetime, seed: int
) -> dict[str, list[dict[str, Any]]]:
    """Trips (one per drive), alerts (low energy at shift end) and maintenance (breakdowns)."""
    from atlasmesh.simulator.world import new_id

    rng = np.random.default_rng(seed + 1)
    at = lambda s: origin + timedelta(seconds=float(s))  # noqa: E731
    rows: dict[str, list[dict[str, Any]]] = {"trips": [], "alerts": [], "maintenance_records": []}
    end_s = (end - origin).total_seconds()
    drives = np.flatnonzero(
        (plan["kind"] == DRIVE) & (plan["start"] >= 0) & (plan["start"] < end_s)
    )
    for i in drives:
        vehicle = world.vehicles[plan["v"][i]]
        fleet = world.fleets[vehicle.fleet]
        s, e = plan["start"][i], plan["end"][i]
        scheduled = s - rng.uniform(-2, 6) * 60
        done = e <= end_s
        rows["trips"].append(
            {
                "trip_id": new_id(rng),
                "vehicle_id": vehicle.vehicle_id,
                "route_id": world.routes[fleet.routes[0]].route_id if fleet.routes else None,
                "mission_type": "delivery",
                "status": "completed" if done else "in_progress",
                "origin_latitude": float(plan["lat0"][i]),
                "origin_longitude": float(plan["lon0"][i]),
                "destination_latitude": float(plan["lat0"][i]),
                "destination_longitude": float(plan["lon0"][i]),
                "scheduled_start": at(scheduled),
                "actual_start": at(s),
                "scheduled_end": at(scheduled + (e - s) * rng.uniform(0.9, 1.1)),
                "actual_end": at(e) if done else None,
                "trip_parameters": {"leg": "outbound", "load_kg": round(float(plan["load"][i]), 1)},
                "telemetry_summary": {},
                "created_at": at(scheduled - 3600),
                "updated_at": at(min(e, end_s)),
            }
        )
        if rng.random() < 0.01:  # a breakdown during the drive, repaired in a few hours
            started = s + (e - s) * rng.uniform(0.2, 0.8)
            finished = started + rng.uniform(1, 5) * 3600
            rows["maintenance_records"].append(
                {
                    "maintenance_id": new_id(rng),
                    "vehicle_id": vehicle.vehicle_id,
                    "maintenance_type": "unscheduled",
                    "component": "drive_motor",
                    "description": "Breakdown repair",
                    "scheduled_date": at(started),
                    "completed_date": at(finished) if finished <= end_s else None,
                    "performed_by": None,
                    "parts_used": [],
                    "cost": round(float(rng.uniform(200, 2000)), 2),
                    "downtime_hours": round((finished - started) / 3600, 3),
                    "diagnostic_results": {},
                    "status": "completed" if finished <= end_s else "in_progress",
                    "created_at": at(started),
                    "updated_at": at(min(finished, end_s)),
                }
            )
        if rng.random() < 0.03:
            rows["alerts"].append(
                {
                    "alert_id": new_id(rng),
                    "vehicle_id": vehicle.vehicle_id,
                    "trip_id": None,
                    "alert_type": "low_battery" if vehicle.model.powertrain == "ev" else "low_fuel",
                    "severity": "warning",
                    "message": "Energy below reserve",
                    "context_data": {},
                    "triggered_at": at(e - 60),
                    "acknowledged_at": None,
                    "resolved_at": None,
                    "acknowledged_by": None,
                    "resolved_by": None,
                    "status": "triggered",
                    "created_at": at(e - 60),
                    "updated_at": at(e - 60),
                }
            )
    return rows


def write_fleet_core(world: Any, rows: dict[str, list[dict[str, Any]]], url: str) -> dict[str, int]:
    """Upsert the world's static rows and the event rows into a fleet-core database."""
    from atlasmesh.fleet_core.store import FleetCoreStore
    from atlasmesh.simulator.records import STATIC_TABLES, static_rows

    static = static_rows(world)
    with FleetCoreStore(url) as store:
        for table in STATIC_TABLES:
            store.upsert(table, static[table])
        for table in ("trips", "maintenance_records", "alerts"):
            store.upsert(table, rows[table])
        return store.row_counts()


# --- loading and measuring ---------------------------------------------------------------


def bulk_load_day(client: Any, lake_dir: Path, day: datetime) -> None:
    """Load one day of processed Parquet into the hot path with INSERT ... SELECT FROM file().

    The bench's data preparation only: the same telemetry rows and hourly metrics state that
    `load_hour_from_lake` gives (load_id aside), without its per-hour staging and swaps.
    """
    from atlasmesh.telemetry.registry import PROCESSED_SCHEMA
    from atlasmesh.warehouse.telemetry import (
        DATABASE,
        METRICS_STATE_TABLE,
        TELEMETRY_TABLE,
        metrics_state_sql,
    )

    names = ", ".join(f"`{n}`" for n in PROCESSED_SCHEMA.names)
    files = lake_dir / "processed" / "vehicle_telemetry" / f"date={day:%Y-%m-%d}" / "hour=*"
    client.command(
        f"INSERT INTO `{DATABASE}`.`{TELEMETRY_TABLE}` ({names}, `load_id`) "
        f"SELECT {names}, 'bench-bulk-{day:%Y%m%d}' FROM file('{files}/*.parquet', Parquet)"
    )
    client.command(
        f"INSERT INTO `{DATABASE}`.`{METRICS_STATE_TABLE}` "
        + metrics_state_sql(
            f"(SELECT * FROM `{DATABASE}`.`{TELEMETRY_TABLE}` "
            f"WHERE toDate(recorded_at) = toDate('{day:%Y-%m-%d}'))"
        )
    )


def rows_between(client: Any, lo: datetime, hi: datetime) -> int:
    """Telemetry rows recorded in [lo, hi)."""
    return int(
        client.query(
            "SELECT count() FROM atlasmesh_analytics.vehicle_telemetry "
            f"WHERE recorded_at >= toDateTime64({lo.timestamp()}, 3, 'UTC') "
            f"AND recorded_at < toDateTime64({hi.timestamp()}, 3, 'UTC')"
        ).result_rows[0][0]
    )


def built_days(client: Any) -> int:
    """Day partitions of the point model built so far (the history an incremental run sits on)."""
    return int(
        client.query(
            "SELECT uniqExact(partition) FROM system.parts WHERE active "
            "AND database = 'analytics_intermediate' "
            "AND table = 'int_telemetry_points_sessionised'"
        ).result_rows[0][0]
    )


def node_seconds(run_results: Path) -> dict[str, float]:
    """Seconds per model from dbt's run_results.json, plus all data tests summed."""
    results = json.loads(run_results.read_text())["results"]
    out: dict[str, float] = {}
    tests = 0.0
    for r in results:
        kind, name = r["unique_id"].split(".")[0], r["unique_id"].split(".")[2]
        if kind == "model":
            out[name] = round(r["execution_time"], 2)
        elif kind == "test":
            tests += r["execution_time"]
    out["data_tests_total"] = round(tests, 2)
    out["nodes"] = len(results)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def rows_to_read(client: Any, compiled: Path) -> dict[str, int]:
    """Telemetry-scale rows each compiled node would read, from EXPLAIN ESTIMATE (index analysis).

    Deterministic, unlike seconds on a shared machine: the rows of the point table and the
    hot path each model or test selects after partition pruning, for nodes reading them.
    """
    big = {"vehicle_telemetry", "int_telemetry_points_sessionised"}
    readers = ("int_telemetry_points_sessionised", "int_trip_points_matched", "vehicle_telemetry")
    out: dict[str, int] = {}
    for path in sorted(compiled.rglob("*.sql")):
        sql = path.read_text()
        # A view's own node only defines it (its readers are counted); CREATE VIEW reads nothing.
        if path.stem == "int_trip_points_matched" or not any(r in sql for r in readers):
            continue
        try:
            rows = client.query(f"EXPLAIN ESTIMATE {sql}").named_results()
        except Exception as exc:  # a node EXPLAIN cannot plan is reported, not fatal
            out[path.stem] = -1
            print(f"EXPLAIN ESTIMATE {path.stem}: {str(exc).splitlines()[0][:200]}")
            continue
        n = sum(int(r["rows"]) for r in rows if r["table"] in big)
        if n:
            out[path.stem[:60]] = n
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def proportionality(builds: dict[str, dict], days: int) -> dict[str, Any]:
    """Incremental costs against history length and against the new data's size."""
    last = days - 1
    one = builds["day_1_history_1"]
    again = builds[f"day_1_again_history_{last}"]
    two = builds["days_2_3_history_2"]
    empty = builds[f"empty_day_history_{last}"]

    def model(build: dict, name: str = "int_telemetry_points_sessionised") -> float:
        return build["nodes_s"].get(name, 0.0)

    fixed = empty["seconds"]
    out: dict[str, Any] = {
        "build_without_new_rows_s": fixed,
        "same_day_history_1_vs_history_last": {
            "days_built_before": [one["days_built_before"], again["days_built_before"]],
            "build_s": [one["seconds"], again["seconds"]],
            "ratio": round(again["seconds"] / one["seconds"], 2),
            "point_model_s": [model(one), model(again)],
            "point_model_ratio": round(model(again) / model(one), 2),
        },
        "two_days_vs_one_day": {
            "new_rows": [one["new_rows"], two["new_rows"]],
            "build_s": [one["seconds"], two["seconds"]],
            "above_fixed_ratio": round((two["seconds"] - fixed) / (one["seconds"] - fixed), 2),
            "point_model_s": [model(one), model(two)],
            "point_model_ratio": round(model(two) / model(one), 2),
        },
    }
    per_m_rows = {
        name: round(model(b) / (b["new_rows"] / 1e6), 3)
        for name, b in builds.items()
        if b["new_rows"]
    }
    out["point_model_s_per_million_new_rows"] = per_m_rows
    return out


# --- polars: the same answers from the processed Parquet ---------------------------------


def polars_answers(
    lake_dir: Path,
    start: datetime,
    as_of: datetime,
    vehicles: pl.DataFrame,
    breakdowns: pl.DataFrame,
) -> dict[str, Callable[[], pl.DataFrame]]:
    """For each question, a function scanning the processed Parquet lazily for its answer."""
    from tests.integration.test_dbt_telemetry_marts import (
        POINT_COLUMNS,
        point_features,
        states_as_of,
        vehicle_days,
    )

    glob = str(lake_dir / "processed" / "vehicle_telemetry" / "**" / "*.parquet")
    as_of_naive = as_of.replace(tzinfo=None)
    first_day = start.replace(tzinfo=None)

    def scan(lo: datetime, hi: datetime) -> pl.DataFrame:
        # Only the columns the answers use, only the rows of [lo, hi]: projection and
        # predicate pushdown, so polars reads what the marts' definitions need and no more.
        return (
            pl.scan_parquet(glob, hive_partitioning=True)
            .select(POINT_COLUMNS)
            .with_columns(pl.col("recorded_at").dt.replace_time_zone(None))
            .filter(pl.col("recorded_at").is_between(lo, hi))
            .collect()
        )

    def recent_states() -> pl.DataFrame:
        # The day before as_of plus the hour of context sessionisation needs on each side.
        points = scan(as_of_naive - timedelta(hours=25, minutes=10), as_of_naive)
        return states_as_of(point_features(points), as_of_naive)

    def day_points(day: datetime) -> pl.DataFrame:
        # One day with an hour of context either side (every flag is decided within 30
        # minutes of its point), so memory stays at one day whatever the history.
        hi = min(day + timedelta(days=1, hours=1), as_of_naive)
        points = point_features(scan(day - timedelta(hours=1), hi))
        return points.filter(pl.col("day") == day.date())

    def days() -> pl.DataFrame:
        per_day = []
        for d in range((as_of_naive - first_day).days + (as_of_naive.hour > 0)):
            points = day_points(first_day + timedelta(days=d)).with_columns(
                energy_drop=pl.when(pl.col("interval_s") > 0).then(
                    (pl.col("energy") - pl.col("next_energy")).clip(lower_bound=0)
                )
            )
            extra = points.group_by("vehicle_id", "day").agg(
                driving_energy_used_percent=pl.col("energy_drop").filter(pl.col("driving")).sum(),
                out_of_service_hours=pl.col("interval_s")
                .filter(
                    ~pl.col("driving")
                    & pl.col("operational_status").is_in(["maintenance", "fault"])
                )
                .sum()
                / 3600,
            )
            per_day.append(vehicle_days(points).join(extra, on=["vehicle_id", "day"]))
        return (
            pl.concat(per_day)
            .join(vehicles, on="vehicle_id")
            .join(breakdowns, on=["vehicle_id", "day"], how="left")
            .with_columns(pl.col("breakdowns").fill_null(0))
        )

    def latest() -> pl.DataFrame:
        return recent_states().join(vehicles, on="vehicle_id", how="right")

    def daily_driving() -> pl.DataFrame:
        return (
            days()
            .filter(pl.col("day") < as_of.date())
            .group_by("organization_id", "fleet_id")
            .agg(
                vehicle_days=pl.len(),
                avg_daily_driving_hours=pl.col("driving_hours").mean(),
                median_daily_driving_hours=pl.col("driving_hours").median(),
            )
        )

    def consumption() -> pl.DataFrame:
        d = days().with_columns(
            driving_energy_used=pl.col("driving_energy_used_percent") / 100 * pl.col("capacity")
        )
        return (
            d.group_by("organization_id", "fleet_id", "manufacturer", "model")
            .agg(
                distance_km=pl.col("distance_km").sum(),
                driving_energy_used=pl.col("driving_energy_used").sum(),
                nominal=pl.col("nominal_consumption").first(),
            )
            .with_columns(
                consumption_vs_nominal=pl.col("driving_energy_used")
                / pl.col("distance_km")
                * 100
                / pl.col("nominal")
            )
        )

    def service_hours() -> pl.DataFrame:
        return (
            days()
            .group_by("organization_id", "fleet_id", "day")
            .agg(
                observed_hours=pl.col("observed_hours").sum(),
                active_hours=(pl.col("driving_hours") + pl.col("idle_hours")).sum(),
                out_of_service_hours=pl.col("out_of_service_hours").sum(),
            )
        )

    def breakdown_frequency() -> pl.DataFrame:
        return (
            days()
            .group_by("organization_id", "manufacturer", "model")
            .agg(
                driving_hours=pl.col("driving_hours").sum(),
                breakdowns=pl.col("breakdowns").sum(),
            )
            .with_columns(per_1000_h=pl.col("breakdowns") * 1000 / pl.col("driving_hours"))
        )

    return {
        "vehicle_latest_states": latest,
        "vehicles_low_on_energy": lambda: recent_states().filter(
            pl.col("energy_level_percent") < 20
        ),
        "vehicles_stationary": lambda: recent_states().filter(
            (pl.col("points_last_10_minutes") > 0) & (pl.col("max_speed_last_10_minutes") < 3)
        ),
        "vehicles_driving_without_rest": lambda: recent_states().filter(
            pl.col("driving_hours_since_rest") >= 4
        ),
        "vehicles_driving_over_10_hours": lambda: recent_states().filter(
            pl.col("driving_hours_24h") > 10
        ),
        "daily_driving_durations": daily_driving,
        "fleet_consumption_vs_nominal": consumption,
        "fleet_service_hours": service_hours,
        "breakdown_frequency_by_model": breakdown_frequency,
    }


# What each mart and its polars twin must agree on (rows, and a summed measure).
CHECKS = {
    "vehicle_latest_states": None,
    "vehicles_low_on_energy": None,
    "vehicles_stationary": None,
    "vehicles_driving_without_rest": None,
    "vehicles_driving_over_10_hours": None,
    "daily_driving_durations": ("vehicle_days", "vehicle_days"),
    "fleet_consumption_vs_nominal": ("distance_km", "distance_km"),
    "fleet_service_hours": ("observed_hours", "observed_hours"),
    "breakdown_frequency_by_model": ("driving_hours", "driving_hours"),
}


def _median_time(fn: Callable[[], Any], runs: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


# --- the run -----------------------------------------------------------------------------


# A daily build as Dagster runs it: the incremental models and what reads them. Unit tests
# are left out: their fixed inputs fall outside the window vars (see docs/analytics.md).
DAILY_BUILD = [
    "build",
    "--select",
    "int_telemetry_points_sessionised+",
    "fct_trips+",
    "--exclude-resource-type",
    "unit_test",
]


def plan_dataset(
    args: argparse.Namespace, min_days: int
) -> tuple[int, datetime, datetime, Any, Any]:
    """Days, start, end, simulated world and drive plan for `args.rows` points ending yesterday."""
    from atlasmesh.simulator import SimConfig
    from atlasmesh.simulator.world import build_world

    per_day = args.vehicles * 86_400 / args.interval_s
    days = max(min_days, math.ceil(args.rows / per_day))
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    origin = today - timedelta(days=days + 1)
    world = build_world(
        SimConfig(seed=args.seed, vehicles=args.vehicles, days=days, start=origin, interval_s=30.0)
    )
    return days, origin, origin + timedelta(days=days), world, make_plan(world, days, args.seed)


def write_processed(
    lake_dir: Path, world: Any, plan: Any, origin: datetime, days: int, interval_s: float
) -> int:
    """Write the telemetry as processed Parquet, one file per event hour; returns the rows."""
    from atlasmesh.telemetry.pipeline import processed_path

    rows = 0
    for hour in range(days * 24):
        table = hour_table(world, plan, origin, hour, interval_s)
        path = lake_dir / processed_path(origin + timedelta(hours=hour))
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path, row_group_size=262_144, compression="zstd")
        rows += table.num_rows
    return rows


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Generate, load, build (full, incremental), then time every question both ways."""
    from atlasmesh.analytics import run_dbt
    from atlasmesh.fleet_core.extract import extract_all
    from atlasmesh.lake import Lake
    from atlasmesh.simulator.world import vehicle_profile
    from atlasmesh.warehouse import service
    from atlasmesh.warehouse.telemetry import ensure_schema, load_hour_from_lake
    from quality.score import ensure_schema as ensure_score_schema
    from tests.fixtures.warehouse import start_service

    days, origin, end, world, plan = plan_dataset(args, min_days=5)
    work = Path(tempfile.mkdtemp(prefix="bench-marts-", dir=args.tmp))
    lake = Lake(f"file://{work / 'lake'}")
    out: dict[str, Any] = {
        "vehicles": args.vehicles,
        "interval_s": args.interval_s,
        "days": days,
        "start": origin.isoformat(),
        "end": end.isoformat(),
    }

    # 1. telemetry as processed Parquet, one file per event hour
    t0 = time.perf_counter()
    rows = write_processed(work / "lake", world, plan, origin, days, args.interval_s)
    parquet_mb = sum(f.stat().st_size for f in (work / "lake").rglob("*.parquet")) / 1e6
    out["generate"] = {
        "rows": rows,
        "parquet_mb": round(parquet_mb, 1),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(f"generated {rows:,} rows, {parquet_mb:.0f} MB in {out['generate']['seconds']} s")

    events = fleet_core_rows(world, plan, origin, end, args.seed)
    url = f"sqlite:///{work / 'fleet_core.db'}"
    out["fleet_core_rows"] = write_fleet_core(world, events, url)

    svc = start_service(work / "home", warehouse_query_timeout_s=args.query_timeout_s)
    settings = svc.settings
    client = svc.client()
    try:
        ensure_schema(client)
        ensure_score_schema(client)  # the quality-score source exists, empty
        extract_all(url, lake, client, now=end, full=True)

        def load(first_day: int, last_day: int) -> float:
            t = time.perf_counter()
            if args.bulk_load:
                for day in range(first_day, last_day):
                    bulk_load_day(client, work / "lake", origin + timedelta(days=day))
            else:
                for hour in range(first_day * 24, last_day * 24):
                    load_hour_from_lake(client, lake, origin + timedelta(hours=hour))
            return time.perf_counter() - t

        def day_at(d: int) -> datetime:
            return origin + timedelta(days=d)

        def dbt(name: str, dbt_args: list[str], as_of: datetime, days_: range | None) -> dict:
            """One timed dbt invocation; window vars cover `days_` (None: no window)."""
            window = {}
            if days_ is not None:
                window = {
                    "window_start": day_at(days_.start).isoformat(),
                    "window_end": day_at(days_.stop).isoformat(),
                }
            target = work / "target" / name
            history = built_days(client)
            t = time.perf_counter()
            result = run_dbt(
                settings,
                dbt_args,
                dbt_vars={"as_of": as_of.isoformat(), **window},
                target_path=target,
                capture=True,
            )
            seconds = time.perf_counter() - t
            if result.returncode != 0:
                raise SystemExit(f"dbt {name} failed:\n{result.stdout[-6000:]}")
            nodes = node_seconds(target / "run_results.json")
            to_read = rows_to_read(client, target / "compiled")
            print(f"dbt {name}: {seconds:.1f} s (load average {os.getloadavg()[0]:.1f})")
            return {
                "seconds": round(seconds, 1),
                "new_days": len(days_) if days_ is not None else None,
                "new_rows": rows_between(client, day_at(days_.start), day_at(days_.stop))
                if days_ is not None
                else None,
                "days_built_before": history,
                "load_avg_1m": round(os.getloadavg()[0], 1),
                "nodes_s": nodes,
                "rows_to_read": to_read,
            }

        # Builds, in order (D days; day k is [day_at(k), day_at(k + 1))). Each incremental
        # build answers as of the end of its window, so the time-relative marts always read
        # one full day of points whatever the window. Data is loaded a day ahead of the
        # builds, as in production (a day is rebuilt until the next day's first hours are
        # in): a day built before its successor exists has no interval from its last points
        # to midnight.
        loads: dict[str, float] = {}
        builds: dict[str, dict] = {}
        loads["days_0_1_s"] = load(0, 2)
        first = ["build", "--exclude-resource-type", "unit_test"]
        builds["first_build_day_0"] = dbt("first", first, day_at(1), range(0, 1))
        loads["day_2_s"] = load(2, 3)
        builds["day_1_history_1"] = dbt("day1", DAILY_BUILD, day_at(2), range(1, 2))
        loads["days_3_4_s"] = load(3, 5)
        builds["days_2_3_history_2"] = dbt("days2-3", DAILY_BUILD, day_at(4), range(2, 4))
        loads["days_5_to_last_s"] = load(5, days)
        if days - 1 > 4:
            builds[f"days_4_{days - 2}_history_4"] = dbt(
                "catch-up", DAILY_BUILD, day_at(days - 1), range(4, days - 1)
            )
        # The same day as day_1_history_1, the same as_of, with all history built around it.
        builds[f"day_1_again_history_{days - 1}"] = dbt(
            "day1-again", DAILY_BUILD, day_at(2), range(1, 2)
        )
        # A window holding no telemetry: what a build costs besides its new rows.
        builds[f"empty_day_history_{days - 1}"] = dbt(
            "empty", DAILY_BUILD, end, range(days + 1, days + 2)
        )
        builds[f"day_{days - 1}_history_{days - 1}"] = dbt(
            "last-day", DAILY_BUILD, end, range(days - 1, days)
        )
        if args.full_refresh:
            builds["full_refresh_all_days"] = dbt(
                "full-refresh", ["build", "--full-refresh"], end, None
            )
        out["load"] = {
            "path": "bulk INSERT ... SELECT FROM file() per day"
            if args.bulk_load
            else "load_hour_from_lake per hour",
            "seconds": {k: round(v, 1) for k, v in loads.items()},
            "rows_per_s": round(rows / sum(loads.values())),
        }
        out["dbt"] = builds
        out["proportionality"] = proportionality(builds, days)
        print(json.dumps(out["proportionality"], indent=2))

        # 4. the questions: mart vs polars
        vehicles = pl.DataFrame(
            [
                {
                    "vehicle_id": v.vehicle_id,
                    "organization_id": world.orgs[v.org].organization_id,
                    "fleet_id": world.fleets[v.fleet].fleet_id,
                    "manufacturer": v.model.manufacturer,
                    "model": v.model.model,
                    "capacity": float(v.model.capacity),
                    "nominal_consumption": float(vehicle_profile(v.model)["nominal_consumption"]),
                }
                for v in world.vehicles
            ]
        )
        breakdowns = (
            pl.DataFrame(
                [
                    {"vehicle_id": m["vehicle_id"], "day": m["scheduled_date"].date()}
                    for m in events["maintenance_records"]
                ],
                schema={"vehicle_id": pl.String, "day": pl.Date},
            )
            .group_by("vehicle_id", "day")
            .agg(breakdowns=pl.len())
        )
        answers = polars_answers(work / "lake", origin, end, vehicles, breakdowns)
        questions = {}
        for mart, polars_fn in answers.items():
            mart_s, table = _median_time(
                lambda m=mart: client.query_arrow(f"SELECT * FROM analytics.`{m}`"), args.runs
            )
            polars_s, frame = _median_time(polars_fn, args.polars_runs)
            mart_df = pl.from_arrow(table)
            check = CHECKS[mart]
            agrees = mart_df.height == frame.height
            if check is not None and agrees and frame.height:
                a, b = float(mart_df[check[0]].sum()), float(frame[check[1]].sum())
                agrees = math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6)
            questions[mart] = {
                "rows": mart_df.height,
                "polars_rows": frame.height,
                "agrees": agrees,
                "mart_ms": round(mart_s * 1000, 2),
                "polars_ms": round(polars_s * 1000, 1),
                "speedup": round(polars_s / mart_s, 1),
            }
            print(f"{mart}: {questions[mart]}")
        out["questions"] = questions
    finally:
        client.close()
        service.stop(settings, timeout=60)
    out["work_dir"] = str(work)
    return out


def _print(results: dict[str, Any]) -> None:
    r = results["run"]
    print(
        f"\n{r['generate']['rows']:,} rows: {r['vehicles']} vehicles every {r['interval_s']} s "
        f"over {r['days']} days ({r['generate']['parquet_mb']} MB Parquet)"
    )
    print(
        f"load ({r['load']['path']}): {r['load']['seconds']} ({r['load']['rows_per_s']:,} rows/s)"
    )
    for name, b in r["dbt"].items():
        print(
            f"  dbt {name:32} {b['seconds']:>8.1f} s  new rows {b['new_rows'] or 0:>11,}  "
            f"days built before {b['days_built_before']}  load {b['load_avg_1m']}"
        )
    print(json.dumps(r["proportionality"], indent=2))
    print(f"\n{'question':32} {'rows':>6} {'mart ms':>9} {'polars ms':>10} {'x':>7} agrees")
    for name, q in r["questions"].items():
        print(
            f"{name:32} {q['rows']:>6} {q['mart_ms']:>9} {q['polars_ms']:>10} "
            f"{q['speedup']:>7} {q['agrees']}"
        )


def main() -> None:
    """Run the benchmark and write bench/results/marts.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000_000)
    parser.add_argument("--vehicles", type=int, default=1000)
    parser.add_argument("--interval-s", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--runs", type=int, default=7, help="mart reads per question")
    parser.add_argument("--polars-runs", type=int, default=3, help="polars runs per question")
    parser.add_argument("--tmp", default=None, help="where the lake and warehouse go")
    parser.add_argument(
        "--bulk-load",
        action="store_true",
        help="load whole days with INSERT ... FROM file() instead of hour by hour",
    )
    parser.add_argument(
        "--full-refresh",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="end with a dbt build --full-refresh over every day",
    )
    parser.add_argument("--query-timeout-s", type=float, default=1800.0)
    args = parser.parse_args()
    results: dict[str, Any] = {
        "benchmark": "marts",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg()},
        "args": vars(args),
    }
    results["run"] = run(args)
    results["machine"]["load_avg_at_end"] = os.getloadavg()
    _print(results)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\nwrote {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
