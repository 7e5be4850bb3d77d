"""Suites for the fleet-core snapshots in the warehouse: keys, references, allowed values.

One suite per extracted table, validated on its `<table>_current` view (latest version of
every row, soft deletes left out). Referential integrity has no built-in expectation across
tables, so each reference is an `UnexpectedRowsExpectation` whose query lists the dangling
values with their row counts. A parent counts as existing if it was ever extracted: a trip
of a vehicle that was decommissioned (soft-deleted) later is history, not a broken link;
a live row pointing at a parent deleted since is reported as a warning.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from quality.suites import (
    Batch,
    accepted,
    build_suite,
    no_rows,
    non_negative,
    present,
    quote,
    unique,
)

if TYPE_CHECKING:
    import great_expectations as gx

DATABASE = "fleet_core"
PARTITION = "current"


@dataclass(frozen=True)
class TableRules:
    """What must hold in one fleet-core table."""

    key: str
    # Column -> parent table; the parent's key column has the same name as the column.
    references: Mapping[str, str] = field(default_factory=dict)
    unique: tuple[str, ...] = ()
    accepted_values: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    non_negative: tuple[str, ...] = ()


# From the fleet-core schema (docs/fleet_core_schema.md): foreign keys, unique columns,
# CHECK constraints. The source database enforces them; the checks prove the extract kept them.
RULES: dict[str, TableRules] = {
    "organizations": TableRules("organization_id"),
    "fleets": TableRules("fleet_id", {"organization_id": "organizations"}),
    "vehicles": TableRules(
        "vehicle_id", {"fleet_id": "fleets"}, unique=("asset_tag", "serial_number")
    ),
    "routes": TableRules(
        "route_id",
        {"organization_id": "organizations"},
        non_negative=("distance_km", "estimated_duration_minutes"),
    ),
    "trips": TableRules("trip_id", {"vehicle_id": "vehicles", "route_id": "routes"}),
    "policies": TableRules("policy_id", {"organization_id": "organizations"}),
    "policy_decisions": TableRules(
        "decision_id",
        {"policy_id": "policies", "vehicle_id": "vehicles", "trip_id": "trips"},
        accepted_values={"decision": ("ALLOW", "DENY")},
    ),
    "vehicle_commands": TableRules("command_id", {"vehicle_id": "vehicles"}),
    "maintenance_records": TableRules(
        "maintenance_id",
        {"vehicle_id": "vehicles"},
        accepted_values={"maintenance_type": ("scheduled", "unscheduled")},
        non_negative=("cost", "downtime_hours"),
    ),
    "alerts": TableRules("alert_id", {"vehicle_id": "vehicles", "trip_id": "trips"}),
    "users": TableRules("user_id", {"organization_id": "organizations"}, unique=("username",)),
    "certificates": TableRules("certificate_id", {"vehicle_id": "vehicles"}),
    "secrets": TableRules("secret_id", {"organization_id": "organizations"}),
}


def _rules(table: str) -> TableRules:
    if table not in RULES:
        raise KeyError(f"no quality rules for fleet-core table {table!r}; known: {sorted(RULES)}")
    return RULES[table]


def dataset(table: str) -> str:
    """The dataset name scores and alerts use for a fleet-core table."""
    return f"fleet_core.{table}"


def fleet_core_batch(table: str, *, database: str = DATABASE) -> Batch:
    """The live rows of one extracted table."""
    _rules(table)
    return Batch(
        dataset=dataset(table),
        partition=PARTITION,
        sql=f"SELECT * FROM {quote(database, table + '_current')}",
    )


def fleet_core_suite(table: str, *, database: str = DATABASE) -> gx.ExpectationSuite:
    """Unique keys, existing parents, allowed values and non-negative amounts of one table."""
    rules = _rules(table)
    items: list[Any] = [
        *present([rules.key], rule="key_present"),
        unique([rules.key], "key_unique"),
        *(unique([column], f"{column}_unique") for column in rules.unique),
    ]
    for column, parent in rules.references.items():
        ever = quote(database, parent)
        live = quote(database, parent + "_current")
        dangling = (
            f"SELECT {column}, count() AS rows FROM {{batch}} "
            f"WHERE {column} IS NOT NULL AND {column} NOT IN (SELECT {column} FROM {ever}) "
            f"GROUP BY {column}"
        )
        deleted = (
            f"SELECT {column}, count() AS rows FROM {{batch}} "
            f"WHERE {column} IS NOT NULL AND {column} IN (SELECT {column} FROM {ever}) "
            f"AND {column} NOT IN (SELECT {column} FROM {live}) GROUP BY {column}"
        )
        items += [
            no_rows(
                dangling,
                "consistency",
                f"{column}_exists",
                f"Every {column} of {table} exists in {parent}.",
            ),
            no_rows(
                deleted,
                "consistency",
                f"{column}_not_deleted",
                f"Live {table} rows point at {parent} that were deleted since.",
                blocking=False,
            ),
        ]
    items += accepted(rules.accepted_values)
    items += non_negative(rules.non_negative, "validity")
    return build_suite(f"fleet_core_{table}", items)
