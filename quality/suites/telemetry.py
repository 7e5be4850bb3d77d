"""The gate on one event hour of telemetry in the warehouse hot path.

One SQL query measures the hour (`profile_sql`): per-row columns first, some of them window
functions over each vehicle's points in time order (the odometer step and the speed implied
by the distance to the previous fix), then one row of counts, shares, rates and latency
percentiles. Great Expectations validates that row: each rule is an expectation on one
measured column (`expect_column_max_to_be_between` and friends), so Data Docs show the
measured value against its threshold. Measuring once keeps the gate to one scan of the hour
instead of a query per expectation, and the quality score reads the same row.

Many hours are measured by one query (a row per hour) and validated together by the
`telemetry_hours_suite`: the same rules as per-row expectations, so one validation names
the hours that break each rule (`unexpected_index_list` on the `partition` column).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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
HOURS_SUITE_NAME = "vehicle_telemetry_hours"
EXPECTED_ROWS = "expected_rows"
# The column naming each measured hour, as Dagster's hourly partitions spell it.
PARTITION = "partition"
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


def _hours(hours: datetime | Sequence[datetime]) -> list[datetime]:
    listed = [hours] if isinstance(hours, datetime) else list(hours)
    if not listed:
        raise ValueError("no hour to measure")
    return sorted({on_the_hour(h) for h in listed})


def profile_sql(
    database: str,
    hours: datetime | Sequence[datetime],
    *,
    fleet_core_database: str | None = "fleet_core",
    with_loads: bool = True,
    table: str = TELEMETRY_TABLE,
    expected_rows: dict[datetime, int] | None = None,
) -> str:
    """The measurement the suite and the score read: one row per event hour in `hours`.

    `with_loads` reads the hot path's load log (`telemetry_loads`) for the recorded_at to
    queryable latency; `fleet_core_database` names the extract that holds every vehicle.
    Each row carries its `partition` and, when given, the hour's `expected_rows`. An hour
    without rows still gets its row (of zeros): one hour is aggregated whole, several are
    grouped and right-joined to the list of hours.
    """
    hours = _hours(hours)
    many = len(hours) > 1
    keys = [partition_key(h) for h in hours]
    expected = {partition_key(h): int(n) for h, n in (expected_rows or {}).items()}
    step_s = "dateDiff('millisecond', prev_recorded_at, recorded_at) / 1e3"
    step_m = "geoDistance(longitude, latitude, prev_longitude, prev_latitude)"
    nil = f"toUUID('{_NIL_UUID}')"
    tire_low, tire_high = th.TIRE_PRESSURE_KPA_BAND
    aux_low, aux_high = th.AUX_BATTERY_V_BAND
    statuses = ", ".join(f"'{s}'" for s in policy.OPERATIONAL_STATUSES)
    hour_list = ", ".join(f"toDateTime('{h:%Y-%m-%d %H:%M:%S}', 'UTC')" for h in hours)
    # The loads of every measured hour, each sorted: a row became queryable at the first
    # load of its hour after it arrived.
    loads = (
        "(SELECT mapFromArrays(groupArray(hour), groupArray(loads)) FROM ("
        "SELECT hour, arraySort(groupArray(loaded_at)) AS loads "
        f"FROM {quote(database, LOADS_TABLE)} WHERE hour IN ({hour_list}) GROUP BY hour))"
        "[toDateTime(toStartOfHour(recorded_at), 'UTC')]"
        if with_loads
        else "CAST([], 'Array(DateTime64(3, \\'UTC\\'))')"
    )
    known = (
        f"vehicle_id IN (SELECT vehicle_id FROM {quote(fleet_core_database, 'vehicles')})"
        if fleet_core_database
        else "1"
    )
    # The previous fix of the same vehicle in the same hour (NULL for its first). One hour is
    # ordered like the table (vehicle_id, recorded_at), so ClickHouse reads in order instead
    # of sorting.
    lags = [
        f"lagInFrame(toNullable({c})) OVER w AS prev_{c}"
        for c in ("recorded_at", "latitude", "longitude", "odometer_km")
    ]
    window = "vehicle_id, toStartOfHour(recorded_at)" if many else "vehicle_id"
    row_columns = [
        "telemetry_id",
        "vehicle_id",
        "recorded_at",
        "ingested_at",
        "heading_degrees",
        "operational_status",
        *ranges(),
        "dateDiff('millisecond', recorded_at, ingested_at) / 1e3 AS arrival_latency_s",
        f"dateDiff('millisecond', recorded_at, arrayFirstOrNull(l -> l >= ingested_at, {loads}))"
        " / 1e3 AS queryable_latency_s",
        f"toUInt8(telemetry_id = {nil} OR vehicle_id = {nil} OR operational_status = '' "
        "OR schema_version = '' OR sensor_readings = '') AS missing_required",
        *(f"toUInt8({expr}) AS has_{name}" for name, expr in th.EXPECTED_FIELDS.items()),
        f"toUInt8({known}) AS vehicle_known",
        "toUInt8("
        + " OR ".join(_outside(t, tire_low, tire_high) for t in _TIRES)
        + ") AS tire_unit_bad",
        f"toUInt8({_outside('aux_battery_v', aux_low, aux_high)}) AS aux_unit_bad",
    ]
    # Computed from each fix and the one before it, after the window.
    step_columns = [
        "odometer_km - prev_odometer_km AS odometer_step_km",
        f"if({step_s} >= {th.MIN_STEP_S}, greatest({step_m} - {th.GPS_JITTER_M}, 0) "
        f"/ ({step_s}) * 3.6, NULL) AS implied_speed_kmh",
    ]
    odometer_bad = f"ifNull(odometer_step_km < {-th.ODOMETER_DECREASE_TOLERANCE_KM!r}, 0)"
    speed_bad = f"ifNull(implied_speed_kmh > {th.MAX_IMPLIED_SPEED_KMH!r}, 0)"
    # count(telemetry_id), not count(): the row an empty hour gets from the right join has
    # NULL in every column, and no -If or quantile counts it.
    measures = [
        PARTITION if many else f"'{keys[0]}' AS {PARTITION}",
        "count(telemetry_id) AS rows",
        "uniqExact(vehicle_id) AS vehicles",
        "count(telemetry_id) - uniqExact(telemetry_id) AS duplicate_ids",
        "countIf(missing_required = 1) AS missing_required_rows",
    ]
    if expected:
        values = ", ".join(str(expected.get(k, 0)) for k in keys)
        names = ", ".join(f"'{k}'" for k in keys)
        measures.insert(
            1, f"toUInt64(transform({PARTITION}, [{names}], [{values}], 0)) AS {EXPECTED_ROWS}"
        )
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
    start, end = hours[0], hours[-1] + timedelta(hours=1)
    # Contiguous hours are one range scan; a gap-filled list also filters on the hour.
    listed = (
        ""
        if len(hours) == (end - start) // timedelta(hours=1)
        else (f" AND toStartOfHour(recorded_at) IN ({hour_list})")
    )
    if many:
        row_columns.insert(
            0, "formatDateTime(toStartOfHour(recorded_at), '%Y-%m-%d-%H:00') AS hour_key"
        )
    lags_sql = ",\n            ".join(lags)
    rows_sql = ",\n            ".join(row_columns)
    steps_sql = ",\n        ".join(step_columns)
    measures_sql = ",\n    ".join(measures)
    # The per-row flags are computed before the window, so that only narrow columns travel
    # through it (not the JSON strings they are computed from).
    rows = f"""(
    SELECT
        *,
        {steps_sql}
    FROM (
        SELECT
            {rows_sql},
            {lags_sql}
        FROM {quote(database, table)}
        WHERE recorded_at >= {_ts(start)} AND recorded_at < {_ts(end)}{listed}
        WINDOW w AS (PARTITION BY {window} ORDER BY recorded_at
                     ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)
    )
)"""
    if not many:
        return f"SELECT\n    {measures_sql}\nFROM {rows}"
    # The list of hours is the right side: the join's hash table holds it, not the rows.
    names = ", ".join(f"'{k}'" for k in keys)
    return f"""SELECT
    {measures_sql}
FROM {rows} AS measured
RIGHT JOIN (SELECT arrayJoin([{names}]) AS {PARTITION}) AS hours
    ON measured.hour_key = hours.{PARTITION}
GROUP BY {PARTITION}
ORDER BY {PARTITION}
SETTINGS join_use_nulls = 1"""


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
            database,
            hour,
            fleet_core_database=fleet_core_database,
            with_loads=with_loads,
            expected_rows={hour: expected_rows},
        ),
        parameters={EXPECTED_ROWS: int(expected_rows)},
        materialize=True,
    )


@dataclass(frozen=True)
class Rule:
    """One gate rule on a measured column: at most, at least, or equal to the expected rows."""

    name: str
    dimension: str
    column: str
    at_most: float | None = None
    at_least: float | None = None
    # True: the measured value must stay strictly under `at_most`.
    strict: bool = False
    # Compare with the hour's processed rows (`expected_rows`) instead of a constant.
    equals_expected: bool = False
    blocking: bool = True
    description: str | None = None


def rules(*, fleet_core_database: str | None = "fleet_core") -> list[Rule]:
    """The telemetry gate's rules, in report order; both suite forms are built from them.

    Blocking: row count equal to the processed partition, every vehicle in fleet-core,
    required values present and expected fields >= 90% present, the validator's ranges and
    values, unique ids, odometer and implied speed under 1% violations. Warning only: units
    (tire pressure in kPa, 12/24 V battery) and arrival latency (late data is still right).
    """
    out = [
        Rule(
            "rows_match_processed",
            "consistency",
            "rows",
            equals_expected=True,
            description="The hour holds exactly the rows of its processed Parquet partition.",
        )
    ]
    if fleet_core_database:
        out.append(
            Rule(
                "vehicles_in_fleet_core",
                "consistency",
                "unknown_vehicle_rows",
                at_most=0,
                description="Every vehicle is in fleet-core.",
            )
        )
    out.append(
        Rule(
            "required_fields_present",
            "completeness",
            "missing_required_rows",
            at_most=0,
            description="No row has an empty id, vehicle, status, schema or sensor block "
            "(ClickHouse stores a NULL sent to a non-Nullable column as '' or the nil UUID).",
        )
    )
    out += [
        Rule(
            f"{name}_present",
            "completeness",
            f"{name}_share",
            at_least=th.COMPLETENESS_MIN,
            description=f"At least {th.COMPLETENESS_MIN:.0%} of rows carry {name}.",
        )
        for name in th.EXPECTED_FIELDS
    ]
    out += [
        Rule(f"{column}_in_range", "validity", f"{column}_out_of_range", at_most=0)
        for column in [*ranges(), "heading_degrees"]
    ]
    rate = th.ACCURACY_MAX_VIOLATION_RATE
    out += [
        Rule("operational_status_known", "validity", "unknown_status_rows", at_most=0),
        Rule(
            "recorded_before_arrival",
            "validity",
            "recorded_after_arrival_rows",
            at_most=0,
            description="No event was recorded after it arrived (beyond clock skew).",
        ),
        Rule("ids_unique", "uniqueness", "duplicate_ids", at_most=0),
        Rule(
            "odometer_monotonic",
            "accuracy",
            "odometer_decrease_rate",
            at_most=rate,
            strict=True,
            description="Each vehicle's odometer goes backwards on under 1% of steps.",
        ),
        Rule(
            "plausible_speed_between_points",
            "accuracy",
            "implausible_speed_rate",
            at_most=rate,
            strict=True,
            description=(
                "Under 1% of steps between consecutive fixes imply more than "
                f"{th.MAX_IMPLIED_SPEED_KMH:g} km/h (distance less GPS jitter over the gap)."
            ),
        ),
        Rule(
            "tire_pressure_in_kpa",
            "accuracy",
            "tire_unit_rate",
            at_most=rate,
            strict=True,
            blocking=False,
        ),
        Rule(
            "aux_battery_in_volts",
            "accuracy",
            "aux_unit_rate",
            at_most=rate,
            strict=True,
            blocking=False,
        ),
        Rule(
            "arrival_latency_p95",
            "timeliness",
            "arrival_latency_p95_s",
            at_most=th.ARRIVAL_LATENCY_P95_S,
            blocking=False,
            description="p95 of recorded_at to arrival within the gateway window + 30 s.",
        ),
    ]
    return out


def _hour_expectation(rule: Rule) -> Any:
    """The rule on one measured row: the column's max (or min) against the bound."""
    import great_expectations.expectations as gxe

    kwargs: dict[str, Any] = {"column": rule.column, "description": rule.description}
    if rule.equals_expected:
        bound = {"$PARAMETER": EXPECTED_ROWS}
        return gxe.ExpectColumnMaxToBeBetween(min_value=bound, max_value=bound, **kwargs)
    if rule.at_most is not None:
        return gxe.ExpectColumnMaxToBeBetween(
            max_value=rule.at_most, strict_max=rule.strict, **kwargs
        )
    return gxe.ExpectColumnMinToBeBetween(min_value=rule.at_least, **kwargs)


def _hours_expectation(rule: Rule) -> Any:
    """The rule on every row of a measured table: each hour's value against the bound."""
    import great_expectations.expectations as gxe

    if rule.equals_expected:
        return gxe.ExpectColumnPairValuesToBeEqual(
            column_A=rule.column, column_B=EXPECTED_ROWS, description=rule.description
        )
    return gxe.ExpectColumnValuesToBeBetween(
        column=rule.column,
        min_value=rule.at_least,
        max_value=rule.at_most,
        strict_max=rule.strict,
        description=rule.description,
    )


def telemetry_hour_suite(*, fleet_core_database: str | None = "fleet_core") -> gx.ExpectationSuite:
    """The telemetry gate on one hour's measured row: Data Docs show each value by its bound."""
    return build_suite(
        SUITE_NAME,
        [
            tag(_hour_expectation(r), r.dimension, r.name, blocking=r.blocking)
            for r in rules(fleet_core_database=fleet_core_database)
        ],
    )


def telemetry_hours_suite(*, fleet_core_database: str | None = "fleet_core") -> gx.ExpectationSuite:
    """The same gate on a table of many measured hours: each failure names its hours."""
    return build_suite(
        HOURS_SUITE_NAME,
        [
            tag(_hours_expectation(r), r.dimension, r.name, blocking=r.blocking)
            for r in rules(fleet_core_database=fleet_core_database)
        ],
    )
