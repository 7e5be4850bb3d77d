"""The activity marts (dbt over telemetry) against an independent polars computation.

The reference below re-implements the documented definitions (moving >= 3 km/h, a gap of
more than 10 minutes ends a session, a stop is 3 minutes stationary, a rest 20 minutes, each
point stands for the interval to the next) over the processed Parquet on the lake, never
reading the warehouse, and the marts must match it value by value.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from atlasmesh.analytics import run_dbt
from atlasmesh.fleet_core.store import FleetCoreStore

pytestmark = [
    pytest.mark.integration,
    pytest.mark.xdist_group("fleet"),
    # The first test builds the fleet and the whole dbt project; the incremental one runs dbt
    # four times: minutes each on a shared 2-core machine.
    pytest.mark.timeout(1800),
]

MOVING_KMH = 3.0
GAP_MS = 600_000
STOP_MS = 180_000
REST_MS = 1_200_000
EARTH_RADIUS_KM = 6371.0088
LOW_ENERGY_PERCENT = 20.0


def haversine_km(lat1, lon1, lat2, lon2) -> np.ndarray:
    """Great-circle distance on the sphere of mean earth radius, in km."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(lon2) - np.radians(lon1)
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(a))


# The processed columns point_features reads (bench/bench_marts.py scans only these).
POINT_COLUMNS = [
    "vehicle_id",
    "telemetry_id",
    "recorded_at",
    "latitude",
    "longitude",
    "speed_kmh",
    "battery_level_percent",
    "fuel_level_percent",
    "operational_status",
    "diagnostic_codes",
]


def point_features(processed: pl.DataFrame) -> pl.DataFrame:
    """Every point with its interval, distance and driving / stop / rest flags."""
    v = "vehicle_id"
    frame = (
        processed.select(
            *(c for c in POINT_COLUMNS if c != "diagnostic_codes"),
            pl.col("diagnostic_codes").list.len().fill_null(0).alias("dtc_count"),
        )
        .sort(v, "recorded_at", "telemetry_id")
        .with_columns(
            t=pl.col("recorded_at").dt.epoch("ms"),
            energy=pl.coalesce("battery_level_percent", "fuel_level_percent"),
            moving=pl.col("speed_kmh") >= MOVING_KMH,
        )
        .with_columns(
            prev_t=pl.col("t").shift(1).over(v),
            next_t=pl.col("t").shift(-1).over(v),
            prev_moving=pl.col("moving").shift(1).over(v),
            next_speed=pl.col("speed_kmh").shift(-1).over(v),
            next_lat=pl.col("latitude").shift(-1).over(v),
            next_lon=pl.col("longitude").shift(-1).over(v),
            next_energy=pl.col("energy").shift(-1).over(v),
        )
        .with_columns(
            opens=pl.col("prev_t").is_null() | (pl.col("t") - pl.col("prev_t") > GAP_MS),
            closes=pl.col("next_t").is_null() | (pl.col("next_t") - pl.col("t") > GAP_MS),
        )
        .with_columns(
            opens_run=pl.col("opens") | (pl.col("moving") != pl.col("prev_moving")),
        )
        .with_columns(run=pl.col("opens_run").cast(pl.Int64).cum_sum().over(v))
        .with_columns(
            span=(pl.col("t").max() - pl.col("t").min()).over(v, "run"),
            after_motion=~pl.col("opens").first().over(v, "run"),
            before_motion=~pl.col("closes").last().over(v, "run"),
        )
        .with_columns(
            in_stop=~pl.col("moving") & (pl.col("span") >= STOP_MS),
            in_rest=~pl.col("moving") & (pl.col("span") >= REST_MS),
            driving=pl.col("moving")
            | ((pl.col("span") < STOP_MS) & pl.col("after_motion") & pl.col("before_motion")),
            interval_s=pl.when(pl.col("closes"))
            .then(0.0)
            .otherwise(
                (
                    pl.min_horizontal(
                        "next_t",
                        (pl.col("recorded_at").dt.truncate("1d") + pl.duration(days=1)).dt.epoch(
                            "ms"
                        ),
                    )
                    - pl.col("t")
                )
                / 1000.0
            ),
            since_previous_s=(pl.col("t") - pl.col("prev_t")) / 1000.0,
        )
    )
    km = haversine_km(
        frame["latitude"].to_numpy(),
        frame["longitude"].to_numpy(),
        frame["next_lat"].fill_null(0.0).to_numpy(),
        frame["next_lon"].fill_null(0.0).to_numpy(),
    )
    counts = (pl.col("interval_s") > 0) & (
        pl.col("moving") | (pl.col("next_speed").fill_null(0.0) >= MOVING_KMH)
    )
    return frame.with_columns(
        km_to_next=pl.when(counts).then(pl.Series(km)).otherwise(0.0),
        next_speed=pl.when(pl.col("interval_s") > 0).then(pl.col("next_speed")),
        stop_started=pl.col("in_stop") & pl.col("opens_run"),
        rest_started=pl.col("in_rest") & pl.col("opens_run"),
        day=pl.col("recorded_at").dt.date(),
    )


def vehicle_days(points: pl.DataFrame) -> pl.DataFrame:
    """Per vehicle and UTC day, the measures fct_vehicle_days documents."""
    driving_s = pl.col("interval_s").filter(pl.col("driving"))
    idle = ~pl.col("driving") & pl.col("operational_status").is_in(["idle", "driving"])
    return points.group_by("vehicle_id", "day").agg(
        telemetry_points=pl.len(),
        observed_hours=pl.col("interval_s").sum() / 3600,
        driving_hours=driving_s.sum() / 3600,
        idle_hours=pl.col("interval_s").filter(idle).sum() / 3600,
        distance_km=pl.col("km_to_next").sum(),
        stops=pl.col("stop_started").sum(),
        rests=pl.col("rest_started").sum(),
        avg_speed_kmh=((pl.col("speed_kmh") + pl.col("next_speed")) / 2 * pl.col("interval_s"))
        .filter(pl.col("driving"))
        .sum()
        / driving_s.sum(),
        max_speed_kmh=pl.col("speed_kmh").max(),
        min_battery_percent=pl.col("battery_level_percent").min(),
        min_fuel_percent=pl.col("fuel_level_percent").min(),
        readings_with_dtc=(pl.col("dtc_count") > 0).sum(),
        dtc_reported=pl.col("dtc_count").sum(),
    )


def states_as_of(points: pl.DataFrame, as_of: datetime) -> pl.DataFrame:
    """Per vehicle at as_of: latest point, driving in 24 h and since the last rest."""
    window_start = as_of - timedelta(hours=24)
    recent = points.filter(
        (pl.col("recorded_at") > window_start - timedelta(minutes=10))
        & (pl.col("recorded_at") <= as_of)
    )
    ends = pl.min_horizontal(
        pl.col("recorded_at")
        + pl.duration(milliseconds=(pl.col("interval_s") * 1000).cast(pl.Int64)),
        pl.lit(as_of),
    )
    starts = pl.max_horizontal(pl.col("recorded_at"), pl.lit(window_start))
    recent = recent.with_columns(
        window_s=pl.max_horizontal((ends - starts).dt.total_milliseconds() / 1000.0, pl.lit(0.0)),
        rest_at=pl.when(pl.col("in_rest") | (pl.col("since_previous_s") >= REST_MS / 1000))
        .then(pl.col("recorded_at"))
        .max()
        .over("vehicle_id"),
    )
    since_rest = pl.col("rest_at").is_null() | (pl.col("recorded_at") >= pl.col("rest_at"))
    ten_minutes = pl.col("recorded_at") > as_of - timedelta(minutes=10)
    return (
        recent.sort("recorded_at")
        .group_by("vehicle_id")
        .agg(
            last_seen_at=pl.col("recorded_at").last(),
            latitude=pl.col("latitude").last(),
            longitude=pl.col("longitude").last(),
            operational_status=pl.col("operational_status").last(),
            energy_level_percent=pl.col("energy").last(),
            driving_hours_24h=pl.col("window_s").filter(pl.col("driving")).sum() / 3600,
            driving_hours_since_rest=pl.col("window_s").filter(pl.col("driving") & since_rest).sum()
            / 3600,
            points_last_10_minutes=ten_minutes.sum(),
            max_speed_last_10_minutes=pl.col("speed_kmh").filter(ten_minutes).max(),
        )
        .filter(pl.col("last_seen_at") > window_start)
    )


def test_vehicle_days_match_an_independent_computation(fleet_analytics):
    expected = vehicle_days(point_features(fleet_analytics.fleet.processed()))
    actual = fleet_analytics.query_df(
        f"""
        select toString(vehicle_id) as vehicle_id, activity_date as day, telemetry_points,
            observed_hours, driving_hours, idle_hours, distance_km, stops, rests,
            avg_speed_kmh, max_speed_kmh, min_battery_percent, min_fuel_percent,
            readings_with_dtc, dtc_reported
        from `{fleet_analytics.schema}`.fct_vehicle_days
        """
    )
    assert actual.height == expected.height == 12  # 6 vehicles x 2 days
    assert actual["distance_km"].sum() > 100  # the fleet drove: not a vacuous comparison
    assert actual["stops"].sum() > 0 and actual["readings_with_dtc"].sum() > 0
    assert_frame_equal(
        actual.sort("vehicle_id", "day"),
        expected.sort("vehicle_id", "day"),
        check_dtypes=False,
        check_column_order=False,
        rel_tol=1e-9,
        abs_tol=1e-9,
    )


def test_trips_measure_the_telemetry_recorded_during_them(fleet_analytics):
    fleet = fleet_analytics.fleet
    with FleetCoreStore(fleet.fleet_core_url) as store:
        trips = pl.DataFrame(
            [
                {"trip_id": t["trip_id"], "vehicle_id": t["vehicle_id"], "start": t["actual_start"],
                 "end": t["actual_end"] or fleet.end}
                for t in store.read("trips")
                if t["actual_start"] is not None and t["deleted_at"] is None
            ]
        ).with_columns(pl.col("start", "end").dt.cast_time_unit("ms"))  # fmt: skip
    points = point_features(fleet.processed())
    matched = (
        points.sort("recorded_at")
        .join_asof(
            trips.sort("start"),
            left_on="recorded_at",
            right_on="start",
            by="vehicle_id",
            strategy="backward",
            check_sortedness=False,
        )
        .filter(pl.col("trip_id").is_not_null() & (pl.col("recorded_at") < pl.col("end")))
    )
    expected = (
        trips.select("trip_id")
        .join(
            matched.group_by("trip_id").agg(
                telemetry_points=pl.len(),
                distance_km=pl.col("km_to_next").sum(),
                max_speed_kmh=pl.col("speed_kmh").max(),
            ),
            on="trip_id",
            how="left",
        )
        # A trip that started after the last point delivered has no telemetry yet.
        .with_columns(pl.col("telemetry_points").fill_null(0))
    )
    actual = fleet_analytics.query_df(
        f"""
        select toString(trip_id) as trip_id, telemetry_points, distance_km, max_speed_kmh
        from `{fleet_analytics.schema}`.fct_trips
        where actual_start is not null
        """
    )
    assert actual.height == trips.height and actual.height > 50
    assert_frame_equal(
        actual.sort("trip_id"),
        expected.sort("trip_id"),
        check_dtypes=False,
        check_column_order=False,
        rel_tol=1e-9,
        abs_tol=1e-9,
    )
    on_time = fleet_analytics.query_df(
        f"""
        select countIf(is_on_time = 1) as on_time, countIf(is_on_time = 0) as late,
            countIf(is_on_time is not null and status != 'completed') as misfiled
        from `{fleet_analytics.schema}`.fct_trips
        """
    ).row(0, named=True)
    # The simulator drives faster or slower than planned: both outcomes must occur.
    assert on_time["on_time"] > 0 and on_time["late"] > 0 and on_time["misfiled"] == 0


def test_latest_states_and_time_relative_questions_match(fleet_analytics):
    fleet = fleet_analytics.fleet
    expected = states_as_of(point_features(fleet.processed()), fleet.end)
    schema = fleet_analytics.schema
    latest = fleet_analytics.query_df(
        f"""
        select toString(vehicle_id) as vehicle_id, last_seen_at, latitude, longitude,
            operational_status, energy_level_percent
        from `{schema}`.vehicle_latest_states
        """
    )
    assert latest.height == 6
    assert_frame_equal(
        latest.sort("vehicle_id"),
        expected.select(latest.columns).sort("vehicle_id"),
        check_dtypes=False,
        rel_tol=1e-12,
    )
    summary = fleet_analytics.query_df(
        f"""
        select toString(vehicle_id) as vehicle_id, driving_hours_24h, driving_hours_since_rest,
            points_last_10_minutes
        from `{schema}_intermediate`.int_vehicle_states_summarised
        """
    )
    assert summary["driving_hours_24h"].sum() > 10
    assert_frame_equal(
        summary.sort("vehicle_id"),
        expected.select(summary.columns).sort("vehicle_id"),
        check_dtypes=False,
        rel_tol=1e-9,
        abs_tol=1e-9,
    )

    def answer(model: str) -> set[str]:
        frame = fleet_analytics.query_df(
            f"select toString(vehicle_id) as vehicle_id from `{schema}`.{model}"
        )
        return set(frame["vehicle_id"])

    def ids(condition: pl.Expr) -> set[str]:
        return set(expected.filter(condition)["vehicle_id"])

    stationary = ids(
        (pl.col("points_last_10_minutes") > 0) & (pl.col("max_speed_last_10_minutes") < MOVING_KMH)
    )
    # At the end of the period (evening in the fleet's city) some vehicles stand.
    assert len(stationary) > 0
    assert answer("vehicles_stationary") == stationary
    assert answer("vehicles_low_on_energy") == ids(
        pl.col("energy_level_percent") < LOW_ENERGY_PERCENT
    )
    assert answer("vehicles_driving_without_rest") == ids(pl.col("driving_hours_since_rest") >= 4)
    assert answer("vehicles_driving_over_10_hours") == ids(pl.col("driving_hours_24h") > 10)


def test_fleet_days_and_daily_driving_roll_up_the_vehicle_days(fleet_analytics):
    per_vehicle_day = vehicle_days(point_features(fleet_analytics.fleet.processed()))
    expected = per_vehicle_day.group_by("day").agg(
        vehicles_reporting=pl.len(),
        vehicles_active=(pl.col("distance_km") >= 1).sum(),
        distance_km=pl.col("distance_km").sum(),
        driving_hours=pl.col("driving_hours").sum(),
    )
    actual = fleet_analytics.query_df(
        f"""
        select activity_date as day, vehicles_reporting, vehicles_active, distance_km,
            driving_hours
        from `{fleet_analytics.schema}`.fct_fleet_days
        """
    )
    assert_frame_equal(actual.sort("day"), expected.sort("day"), check_dtypes=False, rel_tol=1e-9)
    average = fleet_analytics.query_df(
        f"select avg_daily_driving_hours from `{fleet_analytics.schema}`.daily_driving_durations"
    )
    assert average.item() == pytest.approx(per_vehicle_day["driving_hours"].mean(), rel=1e-9)


INCREMENTAL_MODELS = {
    "intermediate": ["int_telemetry_points_sessionised"],
    "marts": ["fct_vehicle_days", "fct_trips", "fct_fleet_days"],
}
KEYS = {
    "int_telemetry_points_sessionised": ["telemetry_id"],
    "fct_vehicle_days": ["vehicle_id", "activity_date"],
    "fct_trips": ["trip_id"],
    "fct_fleet_days": ["fleet_id", "activity_date"],
}


def _table(analytics, schema: str, layer: str, model: str) -> pl.DataFrame:
    database = f"{schema}_intermediate" if layer == "intermediate" else schema
    client = analytics.fleet.warehouse.client()
    try:
        columns = [
            name
            for name, kind in client.query(
                "select name, type from system.columns where database = {d:String} "
                "and table = {t:String} order by position",
                parameters={"d": database, "t": model},
            ).result_rows
        ]
        # UUIDs and arrays as text: comparable in polars whatever their Arrow mapping.
        select = ", ".join(f"toString(`{c}`) as `{c}`" if c.endswith("_id") else f"`{c}`"
                           for c in columns)  # fmt: skip
        frame = pl.from_arrow(client.query_arrow(f"select {select} from `{database}`.`{model}`"))
    finally:
        client.close()
    return frame.sort(KEYS[model])


def test_day_by_day_incremental_build_equals_the_full_refresh(fleet_analytics, tmp_path):
    fleet = fleet_analytics.fleet
    schema = f"analytics_inc_{uuid.uuid4().hex[:8]}"
    # The third day holds no telemetry, only trips scheduled after the period; the first day
    # is built again last, out of order, to show a re-run changes nothing.
    days = [fleet.start + timedelta(days=n) for n in (0, 1, 2, 0)]
    for day in days:
        result = run_dbt(
            fleet.warehouse.settings,
            ["run", "--select", "+fct_fleet_days", "+fct_trips"],
            schema=schema,
            dbt_vars={
                **fleet.dbt_vars(),
                "as_of": fleet.end.isoformat(),
                "window_start": day.isoformat(),
                "window_end": (day + timedelta(days=1)).isoformat(),
            },
            target_path=tmp_path / "target",
            capture=True,
            timeout=900,
        )
        assert result.returncode == 0, result.stdout[-6000:]
    try:
        for layer, models in INCREMENTAL_MODELS.items():
            for model in models:
                full = _table(fleet_analytics, fleet_analytics.schema, layer, model)
                incremental = _table(fleet_analytics, schema, layer, model)
                assert full.height > 0
                assert_frame_equal(incremental, full, rel_tol=1e-9, abs_tol=1e-9)
    finally:
        client = fleet.warehouse.client()
        for database in (schema, f"{schema}_staging", f"{schema}_intermediate"):
            client.command(f"DROP DATABASE IF EXISTS `{database}`")
        client.close()
