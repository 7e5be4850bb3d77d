"""The quality score: the seed's six dimensions per dataset and partition, 0-100, with history.

Each dimension is measured where it can fail (docs/quality.md has the table):
- validity and uniqueness on what was RECEIVED: the lake's stage and build manifests count
  dead letters and duplicates, plus a re-check of what was stored;
- completeness and accuracy on what was ACCEPTED (the warehouse hour);
- consistency across systems: vehicles in fleet-core, hot-path rows equal to the processed
  Parquet and to the load log;
- timeliness from recorded_at to arrival (ingested_at) and to queryable (the hour's loads).
A dimension's score is the share of the partition that is good on it (x100); the partition
score is their weighted mean (`thresholds.DIMENSION_WEIGHTS`) over the measured dimensions,
and it passes only if every measured dimension meets its threshold.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from quality import thresholds as th

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

    from atlasmesh.lake import Lake
    from quality.validate import ValidationOutcome

OPS_DATABASE = "ops"
SCORES_TABLE = "quality_scores"
LATEST_VIEW = "quality_scores_latest"


@dataclass(frozen=True)
class DimensionScore:
    """One dimension of one partition: share good (0-100), verdict, and what was counted."""

    name: str
    score: float
    passed: bool
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class QualityScore:
    """A partition's dimensions, their weighted 0-100 score and whether all passed."""

    dataset: str
    partition: str
    dimensions: dict[str, DimensionScore]
    score: float
    passed: bool
    measured_at: datetime
    run_id: str
    data_docs: str = ""

    @property
    def failed_dimensions(self) -> list[str]:
        """Measured dimensions below their threshold."""
        return [d.name for d in self.dimensions.values() if not d.passed]

    def metadata(self) -> dict[str, Any]:
        """Flat, JSON-friendly figures for Dagster metadata."""
        out: dict[str, Any] = {
            "quality_score": round(self.score, 2),
            "quality_passed": self.passed,
            "failed_dimensions": self.failed_dimensions,
        }
        for name in th.DIMENSIONS:
            dim = self.dimensions.get(name)
            out[f"quality_{name}"] = None if dim is None else round(dim.score, 3)
        return out


def _share(good: float, total: float) -> float:
    """good/total, 1.0 when there is nothing to judge."""
    return 1.0 if total <= 0 else max(0.0, min(1.0, good / total))


def _agreement(a: int, b: int) -> float:
    """How close two counts are: 1.0 when equal, smaller/larger otherwise."""
    return 1.0 if a == b else min(a, b) / max(a, b)


def completeness(
    field_present: Mapping[str, int], missing_required: int, rows: int
) -> DimensionScore:
    """Share of expected values present; passes when every field reaches COMPLETENESS_MIN.

    `field_present` counts rows carrying each expected field; the required block (ids,
    vehicle, status, schema, sensors) counts as one more field.
    """
    cells = rows * (len(field_present) + 1)
    present = sum(field_present.values()) + rows - missing_required
    shares = {f: round(_share(n, rows), 6) for f, n in field_present.items()}
    passed = missing_required == 0 and all(s >= th.COMPLETENESS_MIN for s in shares.values())
    return DimensionScore(
        "completeness",
        100 * _share(present, cells),
        passed,
        {"field_shares": shares, "missing_required_rows": missing_required, "rows": rows},
    )


def accuracy(violation_rows: int, rows: int, **counts: int) -> DimensionScore:
    """Share of rows breaking no plausibility rule; passes under the 1% violation rate."""
    rate = 1 - _share(rows - violation_rows, rows)
    return DimensionScore(
        "accuracy",
        100 * (1 - rate),
        rate < th.ACCURACY_MAX_VIOLATION_RATE,
        {
            "violation_rows": violation_rows,
            "violation_rate": round(rate, 6),
            "rows": rows,
            **counts,
        },
    )


def consistency(
    *,
    rows: int,
    unknown_vehicle_rows: int,
    processed_rows: int | None,
    loaded_rows: int | None,
) -> DimensionScore:
    """Rows whose vehicle is in fleet-core, times agreement of hot path, Parquet and load log."""
    known = _share(rows - unknown_vehicle_rows, rows)
    parts = {"known_vehicle_share": known}
    if processed_rows is not None:
        parts["rows_vs_processed"] = _agreement(rows, processed_rows)
    if loaded_rows is not None:
        parts["rows_vs_load_log"] = _agreement(rows, loaded_rows)
    value = 1.0
    for part in parts.values():
        value *= part
    return DimensionScore(
        "consistency",
        100 * value,
        all(p >= th.CONSISTENCY_MIN for p in parts.values()),
        {
            **{k: round(v, 6) for k, v in parts.items()},
            "rows": rows,
            "unknown_vehicle_rows": unknown_vehicle_rows,
            "processed_rows": processed_rows,
            "loaded_rows": loaded_rows,
        },
    )


def timeliness(
    *,
    rows: int,
    arrival_on_time_rows: int,
    queryable_rows: int = 0,
    queryable_on_time_rows: int = 0,
    **figures: Any,
) -> DimensionScore:
    """Mean of the shares arriving and becoming queryable in time; each must reach 95%."""
    parts = {"arrival_on_time_share": _share(arrival_on_time_rows, rows)}
    if queryable_rows:
        parts["queryable_on_time_share"] = _share(queryable_on_time_rows, queryable_rows)
    return DimensionScore(
        "timeliness",
        100 * sum(parts.values()) / len(parts),
        all(p >= th.TIMELINESS_MIN_SHARE for p in parts.values()),
        {**{k: round(v, 6) for k, v in parts.items()}, "rows": rows, **figures},
    )


def validity(
    *, received: float | None, dead_lettered: float | None, stored_invalid_rows: int, rows: int
) -> DimensionScore:
    """Share of received records that were valid, times share of stored rows still valid.

    Passes when dead letters stay within VALIDITY_MAX_DEAD_LETTER_RATE of what was received
    and no stored row breaks a schema range (that would mean validation was bypassed).
    """
    dead_rate = 0.0 if not received else (dead_lettered or 0.0) / received
    stored = _share(rows - stored_invalid_rows, rows)
    return DimensionScore(
        "validity",
        100 * (1 - dead_rate) * stored,
        dead_rate <= th.VALIDITY_MAX_DEAD_LETTER_RATE and stored_invalid_rows == 0,
        {
            "received": None if received is None else round(received, 3),
            "dead_lettered": None if dead_lettered is None else round(dead_lettered, 3),
            "dead_letter_rate": round(dead_rate, 6),
            "stored_invalid_rows": stored_invalid_rows,
            "rows": rows,
        },
    )


def uniqueness(
    *, delivered: int | None, duplicates: int | None, duplicate_ids: int, rows: int
) -> DimensionScore:
    """Share of deliveries that were not duplicates, times share of stored ids not repeated."""
    dup_rate = 0.0 if not delivered else (duplicates or 0) / delivered
    stored = _share(rows - duplicate_ids, rows)
    return DimensionScore(
        "uniqueness",
        100 * (1 - dup_rate) * stored,
        dup_rate <= th.UNIQUENESS_MAX_DUPLICATE_RATE and duplicate_ids == 0,
        {
            "delivered": delivered,
            "duplicates": duplicates,
            "duplicate_rate": round(dup_rate, 6),
            "stored_duplicate_ids": duplicate_ids,
            "rows": rows,
        },
    )


def combine(
    dataset: str,
    partition: str,
    dimensions: list[DimensionScore],
    *,
    run_id: str | None = None,
    measured_at: datetime | None = None,
    data_docs: str = "",
) -> QualityScore:
    """The weighted 0-100 score of the measured dimensions; passed only if each one passed."""
    if not dimensions:
        raise ValueError(f"{dataset} {partition}: no dimension was measured, nothing to score")
    by_name = {d.name: d for d in dimensions}
    unknown = set(by_name) - set(th.DIMENSION_WEIGHTS)
    if unknown:
        raise ValueError(f"unknown quality dimension(s) {sorted(unknown)}; known: {th.DIMENSIONS}")
    weight = sum(th.DIMENSION_WEIGHTS[n] for n in by_name)
    score = sum(th.DIMENSION_WEIGHTS[n] * d.score for n, d in by_name.items()) / weight
    # Rounded: a weighted mean of 100s is 100, not 100.00000000000001, in every report.
    score = round(min(100.0, max(0.0, score)), 6)
    return QualityScore(
        dataset=dataset,
        partition=partition,
        dimensions=by_name,
        score=score,
        passed=all(d.passed for d in dimensions),
        measured_at=measured_at or datetime.now(UTC),
        run_id=run_id or uuid.uuid4().hex,
        data_docs=data_docs,
    )


# --- Telemetry -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    """What reached an event hour before deduplication and what validation refused for it.

    Dead letters carry no trustworthy event time, so an arrival hour's dead letters are
    shared among the event hours it delivered, in proportion to the rows each received.
    """

    delivered: int
    accepted: int
    duplicates: int
    dead_lettered: float

    @property
    def received(self) -> float:
        """Records received for the hour: delivered (valid) plus its share of dead letters."""
        return self.delivered + self.dead_lettered


def received_counts(
    lake: Lake, hour: datetime, *, stages: dict[datetime, Any] | None = None
) -> Received | None:
    """The hour's received counts from the lake's manifests; None if it was never built.

    `stages` caches stage manifests across calls: an arrival hour delivers to several
    event hours, so scoring a range reads each of them once.
    """
    from atlasmesh.telemetry import pipeline

    build = pipeline.read_build_manifest(lake, hour)
    if build is None:
        return None
    stages = {} if stages is None else stages
    dead = 0.0
    for arrival in build.arrival_hours:
        if arrival not in stages:
            stages[arrival] = pipeline.read_stage_manifest(lake, arrival)
        stage = stages[arrival]
        delivered_here = build.accepted_by_arrival.get(
            arrival, 0
        ) + build.duplicates_by_arrival.get(arrival, 0)
        if stage is not None and stage.staged:
            dead += stage.dead_lettered * delivered_here / stage.staged
    return Received(build.staged, build.accepted, build.duplicates, dead)


def telemetry_dimensions(
    profile: Mapping[str, Any],
    *,
    received: Received | None,
    processed_rows: int | None,
    loaded_rows: int | None,
) -> list[DimensionScore]:
    """The six dimensions of an event hour from its measured profile and received counts."""
    from quality.suites.telemetry import ranges

    rows = int(profile["rows"])
    stored_invalid = sum(int(profile[f"{c}_out_of_range"]) for c in [*ranges(), "heading_degrees"])
    stored_invalid += int(profile["unknown_status_rows"]) + int(
        profile["recorded_after_arrival_rows"]
    )
    dims = [
        consistency(
            rows=rows,
            unknown_vehicle_rows=int(profile["unknown_vehicle_rows"]),
            processed_rows=processed_rows,
            loaded_rows=loaded_rows,
        ),
        validity(
            received=None if received is None else received.received,
            dead_lettered=None if received is None else received.dead_lettered,
            stored_invalid_rows=stored_invalid,
            rows=rows,
        ),
        uniqueness(
            delivered=None if received is None else received.delivered,
            duplicates=None if received is None else received.duplicates,
            duplicate_ids=int(profile["duplicate_ids"]),
            rows=rows,
        ),
    ]
    if rows:
        # Completeness, accuracy and timeliness judge accepted rows: an empty hour has none.
        dims += [
            completeness(
                {f: int(profile[f"{f}_present_rows"]) for f in th.EXPECTED_FIELDS},
                int(profile["missing_required_rows"]),
                rows,
            ),
            accuracy(
                int(profile["accuracy_violation_rows"]),
                rows,
                odometer_decreases=int(profile["odometer_decreases"]),
                implausible_speed_steps=int(profile["implausible_speed_steps"]),
                tire_unit_rows=int(profile["tire_unit_rows"]),
                aux_unit_rows=int(profile["aux_unit_rows"]),
            ),
            timeliness(
                rows=rows,
                arrival_on_time_rows=int(profile["arrival_on_time_rows"]),
                queryable_rows=int(profile["queryable_rows"]),
                queryable_on_time_rows=int(profile["queryable_on_time_rows"]),
                arrival_latency_p95_s=profile["arrival_latency_p95_s"],
                queryable_latency_p95_s=profile["queryable_latency_p95_s"],
            ),
        ]
    return dims


def _loaded_rows(client: Client, database: str, hours: Sequence[datetime]) -> dict[datetime, int]:
    """Rows of each hour's latest load, in one query (hours never loaded are absent)."""
    from atlasmesh.warehouse.telemetry import LATEST_LOADS_VIEW
    from quality.validate import has_table

    if not hours or not has_table(client, database, LATEST_LOADS_VIEW):
        return {}
    rows = client.query(
        f"SELECT toUInt32(hour), rows FROM `{database}`.`{LATEST_LOADS_VIEW}` "
        "WHERE hour IN (SELECT toDateTime(arrayJoin({h:Array(UInt32)}), 'UTC'))",
        parameters={"h": [int(h.timestamp()) for h in hours]},
    ).result_rows
    return {datetime.fromtimestamp(int(at), UTC): int(n) for at, n in rows}


def score_telemetry_hour(
    client: Client,
    hour: datetime,
    *,
    lake: Lake | None,
    database: str | None = None,
    fleet_core_database: str | None = "fleet_core",
    validation: ValidationOutcome | None = None,
    run_id: str | None = None,
) -> QualityScore:
    """Score one event hour of telemetry; reuses the gate's measurement when `validation` is given.

    `lake` supplies the manifests (received counts, processed rows); None scores the warehouse
    side only (validity and uniqueness then judge what was stored).
    """
    from atlasmesh.warehouse.telemetry import DATABASE, LOADS_TABLE
    from quality.suites import telemetry
    from quality.validate import has_table, processed_rows

    hour = telemetry.on_the_hour(hour)
    database = database or DATABASE
    if validation is not None and validation.partition != telemetry.partition_key(hour):
        raise ValueError(
            f"the validation given is of partition {validation.partition}, not of "
            f"{telemetry.partition_key(hour)}; pass the outcome of this hour's gate or none"
        )
    if validation is not None and validation.profile:
        profile = validation.profile
    else:
        result = client.query(
            telemetry.profile_sql(
                database,
                hour,
                fleet_core_database=fleet_core_database,
                with_loads=has_table(client, database, LOADS_TABLE),
            )
        )
        profile = dict(zip(result.column_names, result.result_rows[0], strict=True))
    dims = telemetry_dimensions(
        profile,
        received=None if lake is None else received_counts(lake, hour),
        processed_rows=None if lake is None else processed_rows(lake, hour),
        loaded_rows=_loaded_rows(client, database, [hour]).get(hour),
    )
    return combine(
        telemetry.DATASET,
        telemetry.partition_key(hour),
        dims,
        run_id=run_id or (validation.run_id if validation else None),
        data_docs=(validation.docs_relpath or "") if validation else "",
    )


def score_telemetry_hours(
    client: Client,
    validations: Sequence[ValidationOutcome],
    *,
    lake: Lake | None,
    database: str | None = None,
    run_id: str | None = None,
) -> list[QualityScore]:
    """Score many gated hours from their gates' measurements: one warehouse query for all.

    Like `score_telemetry_hour` with `validation=` for each, but the load log is read once
    and every stage manifest once, however many event hours it delivered to.
    """
    from atlasmesh.warehouse.telemetry import DATABASE
    from quality.suites import telemetry

    hours = [
        datetime.strptime(v.partition, "%Y-%m-%d-%H:%M").replace(tzinfo=UTC) for v in validations
    ]
    loaded = _loaded_rows(client, database or DATABASE, hours)
    stages: dict[datetime, Any] = {}
    scores = []
    for hour, validation in zip(hours, validations, strict=True):
        if validation.dataset != telemetry.DATASET or not validation.profile:
            raise ValueError(f"{validation.partition}: not a measured telemetry gate outcome")
        received = None if lake is None else received_counts(lake, hour, stages=stages)
        dims = telemetry_dimensions(
            validation.profile,
            received=received,
            # The build manifest's accepted rows: what processing published for the hour.
            processed_rows=None if lake is None else _processed(lake, hour, received),
            loaded_rows=loaded.get(hour),
        )
        scores.append(
            combine(
                telemetry.DATASET,
                validation.partition,
                dims,
                run_id=run_id or validation.run_id,
                data_docs=validation.docs_relpath or "",
            )
        )
    return scores


def _processed(lake: Lake, hour: datetime, received: Received | None) -> int:
    from quality.validate import processed_rows

    return received.accepted if received is not None else processed_rows(lake, hour)


# --- Other datasets: scored from their suite's results ------------------------------------------


def score_validation(outcome: ValidationOutcome) -> QualityScore:
    """A score from a suite run: per dimension, the mean share of rows each expectation found good.

    Used for fleet-core snapshots and marts, whose rules are all in their suite. A
    table-level expectation (row count, totals) counts as 1 when it passed and 0 when not.
    """
    groups: dict[str, list[tuple[float, bool]]] = {}
    for r in outcome.results:
        if r.unexpected_percent is not None and r.error is None:
            good = 1 - float(r.unexpected_percent) / 100
        else:
            good = 1.0 if r.success else 0.0
        groups.setdefault(r.dimension, []).append((good, r.success or not r.blocking))
    dims = [
        DimensionScore(
            name,
            100 * sum(g for g, _ in items) / len(items),
            all(ok for _, ok in items),
            {"expectations": len(items)},
        )
        for name, items in groups.items()
    ]
    return combine(
        outcome.dataset,
        outcome.partition,
        dims,
        run_id=outcome.run_id,
        measured_at=outcome.validated_at,
        data_docs=outcome.docs_relpath or "",
    )


# --- Storage -----------------------------------------------------------------------------------

_COLUMNS: dict[str, str] = {
    "dataset": "LowCardinality(String)",
    "partition": "String",
    "run_id": "String",
    "measured_at": "DateTime64(3, 'UTC')",
    "score": "Float64",
    "passed": "Bool",
    **{name: "Nullable(Float64)" for name in th.DIMENSIONS},
    "failed_dimensions": "Array(String)",
    # Per-dimension counts behind the scores, as JSON, for whoever asks "why".
    "details": "String",
    # The run's Data Docs page, relative to the served docs site ($ATLASMESH_HOME/docs/site).
    "data_docs": "String",
}


def schema_statements(database: str = OPS_DATABASE) -> list[str]:
    """DDL of the score history and its latest-per-partition view (idempotent)."""
    columns = ",\n    ".join(f"`{n}` {t}" for n, t in _COLUMNS.items())
    carried = [n for n in _COLUMNS if n not in ("dataset", "partition", "measured_at")]
    picks = ",\n    ".join(
        f"tupleElement(argMax(row, at), {i}) AS `{n}`" for i, n in enumerate(carried, start=1)
    )
    return [
        f"CREATE DATABASE IF NOT EXISTS `{database}`",
        f"""CREATE TABLE IF NOT EXISTS `{database}`.`{SCORES_TABLE}` (
    {columns}
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(measured_at)
ORDER BY (dataset, partition, measured_at)""",
        # argMax over a tuple keeps NULL dimensions (argMax of a Nullable alone skips them).
        f"""CREATE VIEW IF NOT EXISTS `{database}`.`{LATEST_VIEW}` AS
SELECT
    dataset,
    partition,
    max(at) AS measured_at,
    {picks},
    count() AS measurements
FROM (
    SELECT dataset, partition, measured_at AS at, tuple({", ".join(f"`{n}`" for n in carried)}) AS row
    FROM `{database}`.`{SCORES_TABLE}`
)
GROUP BY dataset, partition""",
    ]


def ensure_schema(client: Client, database: str = OPS_DATABASE) -> None:
    """Create the `ops` score table and view if missing."""
    for statement in schema_statements(database):
        client.command(statement)


def store_score(client: Client, score: QualityScore, *, database: str = OPS_DATABASE) -> None:
    """Append a score to the history (the latest view then shows it for its partition)."""
    store_scores(client, [score], database=database)


def store_scores(
    client: Client, scores: Sequence[QualityScore], *, database: str = OPS_DATABASE
) -> None:
    """Append many scores to the history in one insert."""
    if not scores:
        return
    ensure_schema(client, database)
    rows = [
        [
            score.dataset,
            score.partition,
            score.run_id,
            score.measured_at,
            float(score.score),
            bool(score.passed),
            *(
                None if score.dimensions.get(n) is None else float(score.dimensions[n].score)
                for n in th.DIMENSIONS
            ),
            score.failed_dimensions,
            json.dumps(
                {n: d.detail for n, d in score.dimensions.items()}, default=str, sort_keys=True
            ),
            score.data_docs,
        ]
        for score in scores
    ]
    client.insert(f"`{database}`.`{SCORES_TABLE}`", rows, column_names=list(_COLUMNS))


def score_history(
    client: Client, dataset: str, partition: str | None = None, *, database: str = OPS_DATABASE
) -> list[dict[str, Any]]:
    """Stored scores of a dataset (optionally one partition), oldest first."""
    where = "dataset = {d:String}" + (" AND partition = {p:String}" if partition else "")
    result = client.query(
        f"SELECT * FROM `{database}`.`{SCORES_TABLE}` WHERE {where} ORDER BY measured_at",
        parameters={"d": dataset, "p": partition or ""},
    )
    return [dict(zip(result.column_names, r, strict=True)) for r in result.result_rows]
