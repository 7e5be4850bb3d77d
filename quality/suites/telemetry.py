"""The gate on one event hour of telemetry in the warehouse hot path.

One SQL query measures the hour (`profile_sql`): per-row columns first, some of them window
functions over each vehicle's points in time order (the odometer step and the speed implied
by the distance to the previous fix), then one row of counts, shares, rates and latency
percentiles. Great Expectations validates that row: each rule is an expectation on one
measured column (`expect_column_max_to_be_between` and friends), so Data Docs show the
measured value against its threshold. Measuring once keeps the gate to one scan of the hour
instead of a query per expectation, and the quality score reads the same row.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from atlasmesh.telemetry import policy
from atlasmesh.telemetry.registry import SENSOR_FIELDS
from atlasmesh.warehouse.telemetry import DATABASE, LOADS_TABLE, TELEMETRY_TABLE
from quality import thresholds as th
from quality.suites import Batch, build_suite, quote, tag

if TYPE_CHECKING:
    import great_expectations as gx

DATASET = "vehicle_telemetry"
SUITE_NAME = "vehicle_telemetry_hour"
EXPECTED_ROWS = "expected_rows"
_NIL_UUID = "00000000-0000-0000-0000-000000000000"


def on_the_hour(hour: datetime) -> datetime:
    """`hour` as an aware UTC datetime, refused unless it is the start of an hour."""
    if not isinstance(hour, datetime) or hour.tzinfo is None:
        raise ValueError(f"hour {hour!r} must be an aware UTC datetime on the hour")
    hour = hour.astimezone(UTC)
    if hour != hour.replace(minute=0, second=0, microsecond=0):
        raise ValueError(f"hour {hour.isoformat()} is not the start of an hour")
    return hour


def partition_key(hour: datetime) -> str:
    """The partition name of an event hour, as Dagster's hourly partitions spell it."""
    return f"{on_the_hour(hour):%Y-%m-%d-%H:%M}"


def _ts(value: datetime) -> str:
    return f"toDateTime64('{value:%Y-%m-%d %H:%M:%S}', 3, 'UTC')"


def ranges() -> dict[str, tuple[float, float]]:
    """Every range the validator enforces, checked again on what was stored."""
    out = {
        "latitude": policy.LATITUDE_RANGE,
        "longitude": policy.LONGITUDE_RANGE,
        "speed_kmh": policy.SPEED_KMH_RANGE,
        "battery_level_percent": policy.PERCENT_RANGE,
        "fuel_level_percent": policy.PERCENT_RANGE,
        "odometer_km": policy.ODOMETER_KM_RANGE,
    }
    out.update({f.name: (f.range.low, f.range.high) for f in SENSOR_FIELDS if f.range})
    return out


_TIRES = [f.name for f in SENSOR_FIELDS if f.name.startswith("tire_pressure_")]


def _outside(column: str, low: float, high: float) -> str:
    return f"({column} IS NOT NULL AND NOT ({column} >= {low!r} AND {column} <= {high!r}))"


def _rate(count: str, total: str) -> str:
    # An empty hour has no violations: 0, so threshold checks pass on it.
    return f"if({total} = 0, 0, {count} / {total})"


def profile_sql(
    database: str,
    hour: datetime,
    *,
    fleet_core_database: str | None = "fleet_core",
    with_loads: bool = True,
    table: str = TELEMETRY_TABLE,
) -> str:
    """The one-row measurement of an event hour that the suite and the score read.

    `with_loads` reads the hot path's load log (`telemetry_loads`) for the recorded_at to
    queryable latency; `fleet_core_database` names the extract that holds every vehicle.
    """
    start = on_the_hour(hour)
    end = start + timedelta(hours=1)
    step_s = "dateDiff('millisecond', prev_recorded_at, recorded_at) / 1e3"
    step_m = "geoDistance(longitude, latitude, prev_longitude, prev_latitude)"
    nil = f"toUUID('{_NIL_UUID}')"
    tire_low, tire_high = th.TIRE_PRESSURE_KPA_BAND
    aux_low, aux_high = th.AUX_BATTERY_V_BAND
    statuses = ", ".join(f"'{s}'" for s in policy.OPERATIONAL_STATUSES)
    loads = (
        f"(SELECT arraySort(groupArray(loaded_at)) FROM {quote(database, LOADS_TABLE)} "
        f"WHERE hour = toDateTime('{start:%Y-%m-%d %H:%M:%S}', 'UTC'))"
        if with_loads
        else "CAST([], 'Array(DateTime64(3, \\'UTC\\'))')"
    )
    known = (
        f"vehicle_id IN (SELECT vehicle_id FROM {quote(fleet_core_database, 'vehicles')})"
        if fleet_core_database
        else "1"
    )
    # The previous fix of the same vehicle (NULL for its first in the hour). Ordered like the
    # table (vehicle_id, recorded_at), so ClickHouse reads in order instead of sorting.
    lags = [
        f"lagInFrame(toNullable({c})) OVER w AS prev_{c}"
        for c in ("recorded_at", "latitude", "longitude", "odometer_km")
    ]
    row_columns = [
        "telemetry_id",
        "vehicle_id",
        "recorded_at",
        "ingested_at",
        "heading_degrees",
        "operational_status",
        *ranges(),
        "dateDiff('millisecond', recorded_at, ingested_at) / 1e3 AS arrival_latency_s",
        # A row became queryable at the first load of its hour after it arrived.
        f"dateDiff('millisecond', recorded_at, arrayFirstOrNull(l -> l >= ingested_at, {loads}))"
        " / 1e3 AS queryable_latency_s",
        f"toUInt8(telemetry_id = {nil} OR vehicle_id = {nil} OR operational_status = '' "
        "OR schema_version = '' OR sensor_readings = '') AS missing_required",
        *(f"toUInt8({expr}) AS has_{name}" for name, expr in th.EXPECTED_FIELDS.items()),
        f"toUInt8({known}) AS vehicle_known",
        "odometer_km - prev_odometer_km AS odometer_step_km",
        f"if({step_s} >= {th.MIN_STEP_S}, greatest({step_m} - {th.GPS_JITTER_M}, 0) "
        f"/ ({step_s}) * 3.6, NULL) AS implied_speed_kmh",
        "toUInt8("
        + " OR ".join(_outside(t, tire_low, tire_high) for t in _TIRES)
        + ") AS tire_unit_bad",
        f"toUInt8({_outside('aux_battery_v', aux_low, aux_high)}) AS aux_unit_bad",
    ]
    odometer_bad = f"ifNull(odometer_step_km < {-th.ODOMETER_DECREASE_TOLERANCE_KM!r}, 0)"
    speed_bad = f"ifNull(implied_speed_kmh > {th.MAX_IMPLIED_SPEED_KMH!r}, 0)"
    measures = [
        "count() AS rows",
        "uniqExact(vehicle_id) AS vehicles",
        "count() - uniqExact(telemetry_id) AS duplicate_ids",
        "countIf(missing_required = 1) AS missing_required_rows",
    ]
    for name in th.EXPECTED_FIELDS:
        measures += [
            f"countIf(has_{name} = 1) AS {name}_present_rows",
            f"if(rows = 0, 1, {name}_present_rows / rows) AS {name}_share",
        ]
    for column, (low, high) in ranges().items():
        measures.append(f"countIf{_outside(column, low, high)} AS {column}_out_of_range")
    measures += [
        "countIf(NOT (heading_degrees >= 0 AND heading_degrees < 360)) AS heading_degrees_out_of_range",
        f"countIf(operational_status NOT IN ({statuses})) AS unknown_status_rows",
        f"countIf(arrival_latency_s < {-policy.MAX_FUTURE_SKEW.total_seconds()!r}) "
        "AS recorded_after_arrival_rows",
        "countIf(vehicle_known = 0) AS unknown_vehicle_rows",
        "uniqExactIf(vehicle_id, vehicle_known = 0) AS unknown_vehicles",
        "count(odometer_step_km) AS odometer_steps",
        f"countIf({odometer_bad}) AS odometer_decreases",
        f"{_rate('odometer_decreases', 'odometer_steps')} AS odometer_decrease_rate",
        "count(implied_speed_kmh) AS speed_steps",
        f"countIf({speed_bad}) AS implausible_speed_steps",
        f"{_rate('implausible_speed_steps', 'speed_steps')} AS implausible_speed_rate",
        "countIf(tire_unit_bad = 1) AS tire_unit_rows",
        f"{_rate('tire_unit_rows', 'rows')} AS tire_unit_rate",
        "countIf(aux_unit_bad = 1) AS aux_unit_rows",
        f"{_rate('aux_unit_rows', 'rows')} AS aux_unit_rate",
        f"countIf({odometer_bad} OR {speed_bad} OR tire_unit_bad = 1 OR aux_unit_bad = 1) "
        "AS accuracy_violation_rows",
        "if(rows = 0, 0, quantileExact(0.5)(arrival_latency_s)) AS arrival_latency_p50_s",
        "if(rows = 0, 0, quantileExact(0.95)(arrival_latency_s)) AS arrival_latency_p95_s",
        "if(rows = 0, 0, max(arrival_latency_s)) AS arrival_latency_max_s",
        f"countIf(arrival_latency_s <= {th.ARRIVAL_LATENCY_P95_S!r}) AS arrival_on_time_rows",
        "count(queryable_latency_s) AS queryable_rows",
        "quantileExactIf(0.95)(queryable_latency_s, queryable_latency_s IS NOT NULL) "
        "AS queryable_latency_p95_s",
        f"countIf(queryable_latency_s <= {th.QUERYABLE_LATENCY_BUDGET.total_seconds()!r}) "
        "AS queryable_on_time_rows",
    ]
    lags_sql = ",\n            ".join(lags)
    rows_sql = ",\n        ".join(row_columns)
    measures_sql = ",\n    ".join(measures)
    return f"""SELECT
    {measures_sql}
FROM (
    SELECT
        {rows_sql}
    FROM (
        SELECT
            *,
            {lags_sql}
        FROM {quote(database, table)}
        WHERE recorded_at >= {_ts(start)} AND recorded_at < {_ts(end)}
        WINDOW w AS (PARTITION BY vehicle_id ORDER BY recorded_at
                     ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)
    )
)"""


def telemetry_hour_batch(
    hour: datetime,
    *,
    expected_rows: int,
    database: str = DATABASE,
    fleet_core_database: str | None = "fleet_core",
    with_loads: bool = True,
) -> Batch:
    """One event hour of the hot path; `expected_rows` is what its processed Parquet holds."""
    return Batch(
        dataset=DATASET,
        partition=partition_key(hour),
        sql=profile_sql(
            database, hour, fleet_core_database=fleet_core_database, with_loads=with_loads
        ),
        parameters={EXPECTED_ROWS: int(expected_rows)},
        materialize=True,
    )


def _at_most(column: str, limit: float, *, strict: bool = False, **kwargs: Any) -> Any:
    import great_expectations.expectations as gxe

    return gxe.ExpectColumnMaxToBeBetween(
        column=column, max_value=limit, strict_max=strict, **kwargs
    )


def _at_least(column: str, limit: float, **kwargs: Any) -> Any:
    import great_expectations.expectations as gxe

    return gxe.ExpectColumnMinToBeBetween(column=column, min_value=limit, **kwargs)


def telemetry_hour_suite(*, fleet_core_database: str | None = "fleet_core") -> gx.ExpectationSuite:
    """The telemetry gate, one expectation per rule on the hour's measured profile.

    Blocking: row count equal to the processed partition, every vehicle in fleet-core,
    required values present and expected fields >= 90% present, the validator's ranges and
    values, unique ids, odometer and implied speed under 1% violations. Warning only: units
    (tire pressure in kPa, 12/24 V battery) and arrival latency (late data is still right).
    """
    import great_expectations.expectations as gxe

    items: list[Any] = [
        tag(
            gxe.ExpectColumnMaxToBeBetween(
                column="rows",
                min_value={"$PARAMETER": EXPECTED_ROWS},
                max_value={"$PARAMETER": EXPECTED_ROWS},
                description="The hour holds exactly the rows of its processed Parquet partition.",
            ),
            "consistency",
            "rows_match_processed",
        )
    ]
    if fleet_core_database:
        items.append(
            tag(
                _at_most("unknown_vehicle_rows", 0, description="Every vehicle is in fleet-core."),
                "consistency",
                "vehicles_in_fleet_core",
            )
        )
    items.append(
        tag(
            _at_most(
                "missing_required_rows",
                0,
                description="No row has an empty id, vehicle, status, schema or sensor block "
                "(ClickHouse stores a NULL sent to a non-Nullable column as '' or the nil UUID).",
            ),
            "completeness",
            "required_fields_present",
        )
    )
    for name in th.EXPECTED_FIELDS:
        items.append(
            tag(
                _at_least(
                    f"{name}_share",
                    th.COMPLETENESS_MIN,
                    description=f"At least {th.COMPLETENESS_MIN:.0%} of rows carry {name}.",
                ),
                "completeness",
                f"{name}_present",
            )
        )
    for column in [*ranges(), "heading_degrees"]:
        items.append(tag(_at_most(f"{column}_out_of_range", 0), "validity", f"{column}_in_range"))
    items += [
        tag(_at_most("unknown_status_rows", 0), "validity", "operational_status_known"),
        tag(
            _at_most(
                "recorded_after_arrival_rows",
                0,
                description="No event was recorded after it arrived (beyond clock skew).",
            ),
            "validity",
            "recorded_before_arrival",
        ),
        tag(_at_most("duplicate_ids", 0), "uniqueness", "ids_unique"),
        tag(
            _at_most(
                "odometer_decrease_rate",
                th.ACCURACY_MAX_VIOLATION_RATE,
                strict=True,
                description="Each vehicle's odometer goes backwards on under 1% of steps.",
            ),
            "accuracy",
            "odometer_monotonic",
        ),
        tag(
            _at_most(
                "implausible_speed_rate",
                th.ACCURACY_MAX_VIOLATION_RATE,
                strict=True,
                description=(
                    "Under 1% of steps between consecutive fixes imply more than "
                    f"{th.MAX_IMPLIED_SPEED_KMH:g} km/h (distance less GPS jitter over the gap)."
                ),
            ),
            "accuracy",
            "plausible_speed_between_points",
        ),
        tag(
            _at_most("tire_unit_rate", th.ACCURACY_MAX_VIOLATION_RATE, strict=True),
            "accuracy",
            "tire_pressure_in_kpa",
            blocking=False,
        ),
        tag(
            _at_most("aux_unit_rate", th.ACCURACY_MAX_VIOLATION_RATE, strict=True),
            "accuracy",
            "aux_battery_in_volts",
            blocking=False,
        ),
        tag(
            _at_most(
                "arrival_latency_p95_s",
                th.ARRIVAL_LATENCY_P95_S,
                description="p95 of recorded_at to arrival within the gateway window + 30 s.",
            ),
            "timeliness",
            "arrival_latency_p95",
            blocking=False,
        ),
    ]
    return build_suite(SUITE_NAME, items)
