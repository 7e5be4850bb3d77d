"""Suites for key marts, one period (day) at a time: volume, keys, allowed values, totals.

- Row count against the previous period: the period's rows must stay within
  `thresholds.MART_ROW_COUNT_CHANGE_MAX` of the period before (computed when the batch is
  built and passed as suite parameters).
- Keys unique, allowed values, non-negative measures: built-in expectations.
- Totals that reconcile with their source: an `UnexpectedRowsExpectation` whose query
  compares the mart's aggregate over the period with the same figure computed from the
  source, and returns a row (both totals) only when they differ beyond rounding.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from atlasmesh.telemetry import policy
from quality import thresholds as th
from quality.suites import (
    Batch,
    accepted,
    build_suite,
    no_rows,
    non_negative,
    present,
    quote,
    tag,
    unique,
)

if TYPE_CHECKING:
    import great_expectations as gx

MIN_ROWS = "min_rows"
MAX_ROWS = "max_rows"
# Stands for "no upper bound" when the previous period is empty (GX parameters need a value).
_NO_LIMIT = 2**62


@dataclass(frozen=True)
class Reconciliation:
    """A mart total that must equal the same figure computed from its source for the period.

    `source_sql` is a SELECT returning one value named `source_total`; `{start}` and `{end}`
    in it become the period's bounds (DateTime64 literals), `{marts}` the marts database and
    `{telemetry}` the telemetry database.
    """

    name: str
    mart_total: str
    source_sql: str
    tolerance: float = th.RECONCILE_RELATIVE_TOLERANCE


@dataclass(frozen=True)
class MartSpec:
    """What must hold in one mart, per day of `period_column`."""

    table: str
    period_column: str
    keys: tuple[str, ...]
    not_null: tuple[str, ...] = ()
    accepted_values: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    non_negative: tuple[str, ...] = ()
    reconciliations: tuple[Reconciliation, ...] = ()


# The facts analysts and the maintenance model read first (dbt_project/models/marts/activity).
KEY_MARTS: dict[str, MartSpec] = {
    "fct_vehicle_days": MartSpec(
        table="fct_vehicle_days",
        period_column="activity_date",
        keys=("vehicle_id", "activity_date"),
        not_null=("organization_id", "fleet_id", "vehicle_id"),
        accepted_values={"last_operational_status": policy.OPERATIONAL_STATUSES},
        non_negative=("telemetry_points", "distance_km", "driving_hours", "stops"),
        reconciliations=(
            # Every telemetry row of a known vehicle is one point of its vehicle-day.
            Reconciliation(
                "telemetry_points_match_hot_path",
                "sum(telemetry_points)",
                "SELECT count() AS source_total FROM {telemetry}.vehicle_telemetry "
                "WHERE recorded_at >= {start} AND recorded_at < {end} "
                "AND vehicle_id IN (SELECT vehicle_id FROM {marts}.dim_vehicles)",
            ),
        ),
    ),
    "fct_fleet_days": MartSpec(
        table="fct_fleet_days",
        period_column="activity_date",
        keys=("fleet_id", "activity_date"),
        not_null=("organization_id", "fleet_id"),
        non_negative=("vehicles_reporting", "vehicles_active", "distance_km", "incidents"),
        reconciliations=(
            Reconciliation(
                "distance_matches_vehicle_days",
                "sum(distance_km)",
                "SELECT sum(distance_km) AS source_total FROM {marts}.fct_vehicle_days "
                "WHERE activity_date >= toDate({start}) AND activity_date < toDate({end})",
                tolerance=1e-9,
            ),
        ),
    ),
}


def _day(value: date | datetime) -> date:
    return value.astimezone(UTC).date() if isinstance(value, datetime) else value


def _bounds(day: date) -> tuple[str, str]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    end = start + timedelta(days=1)
    fmt = "toDateTime64('{:%Y-%m-%d %H:%M:%S}', 3, 'UTC')"
    return fmt.format(start), fmt.format(end)


def _where(spec: MartSpec, day: date) -> str:
    start, end = _bounds(day)
    return f"{spec.period_column} >= {start} AND {spec.period_column} < {end}"


def row_count_bounds(previous_rows: int) -> tuple[int, int]:
    """The rows a period may have given the previous period's count."""
    if previous_rows <= 0:
        return 0, _NO_LIMIT
    change = th.MART_ROW_COUNT_CHANGE_MAX
    return int(previous_rows * (1 - change)), int(previous_rows * (1 + change)) + 1


def mart_batch(spec: MartSpec, day: date | datetime, *, database: str, previous_rows: int) -> Batch:
    """One day of a mart; `previous_rows` is the day before's row count (see row_count_sql)."""
    day = _day(day)
    low, high = row_count_bounds(previous_rows)
    return Batch(
        dataset=f"marts.{spec.table}",
        partition=day.isoformat(),
        sql=f"SELECT * FROM {quote(database, spec.table)} WHERE {_where(spec, day)}",
        parameters={MIN_ROWS: low, MAX_ROWS: high},
    )


def row_count_sql(spec: MartSpec, day: date | datetime, *, database: str) -> str:
    """Rows of the mart in the period before `day`."""
    before = _day(day) - timedelta(days=1)
    return f"SELECT count() FROM {quote(database, spec.table)} WHERE {_where(spec, before)}"


def mart_suite(
    spec: MartSpec, day: date | datetime, *, database: str, telemetry_database: str
) -> gx.ExpectationSuite:
    """Volume against the previous day, keys, values, measures and reconciled totals."""
    import great_expectations.expectations as gxe

    day = _day(day)
    items: list[Any] = [
        tag(
            gxe.ExpectTableRowCountToBeBetween(
                min_value={"$PARAMETER": MIN_ROWS},
                max_value={"$PARAMETER": MAX_ROWS},
                description=(
                    f"Rows within {th.MART_ROW_COUNT_CHANGE_MAX:.0%} of the previous period's."
                ),
            ),
            "completeness",
            "row_count_vs_previous_period",
        ),
        unique(spec.keys, "key_unique"),
        *present(spec.not_null),
        *accepted(spec.accepted_values),
        *non_negative(spec.non_negative, "accuracy"),
    ]
    start, end = _bounds(day)
    for rec in spec.reconciliations:
        source = rec.source_sql.format(
            start=start, end=end, marts=quote(database), telemetry=quote(telemetry_database)
        )
        # Braces left in the SQL would be read by GX's str.format, which fills {batch}.
        source = source.replace("{", "{{").replace("}", "}}")
        query = (
            "SELECT mart_total, source_total FROM "
            f"(SELECT {rec.mart_total} AS mart_total FROM {{batch}}) AS m "
            f"CROSS JOIN ({source}) AS s "
            "WHERE abs(ifNull(mart_total, 0) - ifNull(source_total, 0)) "
            f"> {rec.tolerance!r} * greatest(abs(ifNull(source_total, 0)), 1)"
        )
        items.append(
            no_rows(
                query,
                "consistency",
                rec.name,
                f"{rec.mart_total} of the day equals its source ({rec.name}).",
            )
        )
    return build_suite(f"mart_{spec.table}", items)
