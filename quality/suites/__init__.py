"""Great Expectations suites built in code, and the batches (SQL over the warehouse) they check.

Each suite module pairs a `*_suite()` function returning a `gx.ExpectationSuite` with a
`*_batch()` function returning the `Batch` it validates. Great Expectations is imported
inside the functions: it costs seconds, and Dagster code that imports this package only to
name a suite must stay fast to load.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from great_expectations.expectations import Expectation

# Meta keys every expectation carries: the quality dimension it measures (seed §8.2) and a
# short rule name for reports, alerts and Dagster metadata.
DIMENSION = "dimension"
RULE = "rule"


@dataclass(frozen=True)
class Batch:
    """The rows a suite validates: a SELECT over the warehouse, named by dataset and partition."""

    dataset: str
    partition: str
    sql: str
    # Values for the suite's `{"$PARAMETER": ...}` placeholders (e.g. the expected row count).
    parameters: dict[str, Any] = field(default_factory=dict)
    # True for a small result (a one-row profile) worth computing once into a table; False
    # runs the SELECT as a view, once per Great Expectations query.
    materialize: bool = False


def tag(expectation: Expectation, dimension: str, rule: str, *, blocking: bool = True) -> Any:
    """Label an expectation with its dimension and rule; non-blocking ones only warn."""
    from great_expectations.expectations.metadata_types import FailureSeverity

    expectation.meta = {**(expectation.meta or {}), DIMENSION: dimension, RULE: rule}
    expectation.severity = FailureSeverity.CRITICAL if blocking else FailureSeverity.WARNING
    # A check whose query fails is reported as failed (and blocks) instead of ending the run.
    expectation.catch_exceptions = True
    return expectation


def build_suite(name: str, expectations: list[Any]) -> Any:
    """A `gx.ExpectationSuite` of these expectations; refuses one GX would silently drop."""
    import great_expectations as gx

    # Built in one call: adding expectations one by one needs an active data context.
    suite = gx.ExpectationSuite(name=name, expectations=expectations)
    if len(suite.expectations) != len(expectations):
        raise ValueError(
            f"suite {name}: {len(expectations) - len(suite.expectations)} expectation(s) have "
            "an invalid configuration (see the log above)"
        )
    return suite


def unique(columns: Sequence[str], rule: str) -> Any:
    """One column's values, or several columns' combinations, never repeat."""
    import great_expectations.expectations as gxe

    if len(columns) == 1:
        return tag(gxe.ExpectColumnValuesToBeUnique(column=columns[0]), "uniqueness", rule)
    expectation = gxe.ExpectCompoundColumnsToBeUnique(column_list=list(columns))
    return tag(expectation, "uniqueness", rule)


def present(columns: Sequence[str], *, rule: str | None = None) -> list[Any]:
    """No NULL in these columns; rules `<column>_present` unless one `rule` names them all."""
    import great_expectations.expectations as gxe

    return [
        tag(gxe.ExpectColumnValuesToNotBeNull(column=c), "completeness", rule or f"{c}_present")
        for c in columns
    ]


def accepted(values: Mapping[str, Sequence[Any]]) -> list[Any]:
    """Each column holds only its listed values (rules `<column>_accepted`)."""
    import great_expectations.expectations as gxe

    return [
        tag(
            gxe.ExpectColumnValuesToBeInSet(column=column, value_set=list(allowed)),
            "validity",
            f"{column}_accepted",
        )
        for column, allowed in values.items()
    ]


def non_negative(columns: Sequence[str], dimension: str) -> list[Any]:
    """Amounts and measures that cannot be below zero (rules `<column>_non_negative`)."""
    import great_expectations.expectations as gxe

    return [
        tag(
            gxe.ExpectColumnValuesToBeBetween(column=column, min_value=0),
            dimension,
            f"{column}_non_negative",
        )
        for column in columns
    ]


def no_rows(
    query: str, dimension: str, rule: str, description: str, *, blocking: bool = True
) -> Any:
    """A query over `{batch}` that returns the offending rows; any row fails the rule.

    Great Expectations fills `{batch}` with str.format, so other braces must be doubled.
    """
    import great_expectations.expectations as gxe

    expectation = gxe.UnexpectedRowsExpectation(
        unexpected_rows_query=query, description=description
    )
    return tag(expectation, dimension, rule, blocking=blocking)


def quote(*names: str) -> str:
    """A backquoted, dot-joined ClickHouse identifier (`db`.`table`)."""
    for name in names:
        if not name or "`" in name or "\\" in name:
            raise ValueError(f"{name!r} is not a usable ClickHouse identifier")
    return ".".join(f"`{n}`" for n in names)
