"""Run suites against the warehouse and return what a gate needs: pass/fail, details, Data Docs.

A batch is a SELECT (see `quality.suites`). For the run it becomes a view in the `ops`
database, or, for a measurement (a row per telemetry hour), a small table computed once;
Great Expectations validates it through its SQL datasource over the ClickHouse HTTP
interface (clickhouse-sqlalchemy), so expectations run as queries in the warehouse and no
rows travel to Python. One GX session (context, run-scoped assets, validation definitions
and checkpoints) serves all the validations of a call, and one Data Docs build renders
their pages and the index. Many telemetry hours are one measurement table and one
validation (`validate_telemetry_hours`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from atlasmesh.settings import Settings
from quality import context as qc
from quality.suites import DIMENSION, RULE, Batch, quote

if TYPE_CHECKING:
    import great_expectations as gx
    from clickhouse_connect.driver.client import Client

    from atlasmesh.lake import Lake
    from quality.suites.marts import MartSpec

log = logging.getLogger("quality.validate")

OPS_DATABASE = "ops"
_VIEW_PREFIX = "_gx_batch__"
_VIEW_NAME = re.compile(rf"^{_VIEW_PREFIX}t(?P<ms>\d+)__[0-9a-f]+$")
_ASSET_SUFFIX = re.compile(r"__[0-9a-f]{12}$")
# A batch view of a run that died is dropped by a later run once it is this old.
_STALE_VIEW_AFTER = timedelta(hours=1)
# Values shown per failed expectation (GX's partial_unexpected_list is up to 20).
_SAMPLE = 5
# Hours measured by one query: grouping costs a sort by (vehicle, hour) that one hour read in
# table order does not, and the window functions hold the rows of a whole group, so a group
# stays under about a million rows (a 1 Hz hour of 1,000 vehicles, 3.6 M rows, goes alone).
MEASURE_ROWS_PER_QUERY = 1_000_000
MEASURE_HOURS_PER_QUERY = 168


@dataclass(frozen=True)
class ExpectationOutcome:
    """One expectation's verdict with what it observed."""

    rule: str
    dimension: str
    expectation: str
    column: str | None
    blocking: bool
    success: bool
    observed: Any = None
    element_count: int | None = None
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    sample: tuple[Any, ...] = ()
    error: str | None = None
    description: str | None = None

    def describe(self) -> str:
        """One line for logs and alert messages."""
        if self.error:
            return f"{self.rule}: check failed to run ({self.error})"
        if self.unexpected_count is not None:
            pct = (
                f" ({self.unexpected_percent:.3g}%)" if self.unexpected_percent is not None else ""
            )
            shown = f", e.g. {list(self.sample)}" if self.sample else ""
            return f"{self.rule}: {self.unexpected_count} unexpected{pct}{shown}"
        return f"{self.rule}: observed {self.observed!r}"


@dataclass(frozen=True)
class ValidationOutcome:
    """The result of one suite on one partition: the gate decision, details and Data Docs."""

    dataset: str
    partition: str
    suite: str
    run_id: str
    success: bool
    results: tuple[ExpectationOutcome, ...]
    validated_at: datetime
    duration_s: float
    docs_path: Path | None = None
    docs_url: str | None = None
    docs_relpath: str | None = None
    # The measured row of a materialized batch (the telemetry hour's profile), else empty.
    profile: dict[str, Any] = field(default_factory=dict)
    # Seconds per step: measure (the batch SQL), open_context (loading the GX project),
    # validate, data_docs. Importing Great Expectations (first use in a process) comes before.
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def failures(self) -> list[ExpectationOutcome]:
        """Failed blocking expectations: any of them fails the gate."""
        return [r for r in self.results if r.blocking and not r.success]

    @property
    def warnings(self) -> list[ExpectationOutcome]:
        """Failed non-blocking expectations: reported, never blocking."""
        return [r for r in self.results if not r.blocking and not r.success]

    def rule(self, name: str) -> ExpectationOutcome:
        """The outcome of one rule by name."""
        for r in self.results:
            if r.rule == name:
                return r
        raise KeyError(
            f"suite {self.suite} has no rule {name!r}; rules: {[r.rule for r in self.results]}"
        )

    def dimensions(self) -> dict[str, bool]:
        """Per quality dimension, whether every blocking expectation of it passed."""
        out: dict[str, bool] = {}
        for r in self.results:
            out[r.dimension] = out.get(r.dimension, True) and (r.success or not r.blocking)
        return out

    def summary(self) -> dict[str, Any]:
        """Flat, JSON-friendly figures for Dagster metadata and alerts."""
        return {
            "dataset": self.dataset,
            "partition": self.partition,
            "suite": self.suite,
            "success": self.success,
            "expectations": len(self.results),
            "failed": [r.rule for r in self.failures],
            "warnings": [r.rule for r in self.warnings],
            "failure_details": [r.describe() for r in self.failures + self.warnings],
            "dimensions_passed": self.dimensions(),
            "run_id": self.run_id,
            "validated_at": self.validated_at.isoformat(),
            "duration_s": round(self.duration_s, 3),
            "timings_s": self.timings,
            "data_docs_path": str(self.docs_path) if self.docs_path else None,
            "data_docs_relpath": self.docs_relpath,
            "measured": self.profile,
        }


def _clean(value: Any) -> Any:
    """JSON-friendly: NaN/inf to None, datetimes to ISO text, containers recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _exception(result: Any) -> str | None:
    """The error of an expectation whose query failed, else None."""
    info = result.exception_info or {}
    # exception_info is either one record or a dict of records keyed by metric.
    records = [info] if "raised_exception" in info else list(info.values())
    for rec in records:
        if isinstance(rec, dict) and rec.get("raised_exception"):
            return str(rec.get("exception_message") or "exception")[:500]
    return None


def _blocking(config: Any) -> bool:
    from great_expectations.expectations.metadata_types import FailureSeverity

    return config.severity == FailureSeverity.CRITICAL


def _outcome(result: Any) -> ExpectationOutcome:
    """Our view of one ExpectationValidationResult."""
    config = result.expectation_config
    meta = config.meta or {}
    kwargs = config.kwargs or {}
    res = result.result or {}
    error = _exception(result)
    sample = res.get("partial_unexpected_list") or []
    return ExpectationOutcome(
        rule=str(meta.get(RULE, config.type)),
        dimension=str(meta.get(DIMENSION, "validity")),
        expectation=config.type,
        column=kwargs.get("column"),
        blocking=_blocking(config),
        success=bool(result.success) and error is None,
        observed=_clean(res.get("observed_value")),
        element_count=res.get("element_count"),
        unexpected_count=res.get("unexpected_count"),
        unexpected_percent=_clean(res.get("unexpected_percent")),
        sample=tuple(_clean(sample[:_SAMPLE])),
        error=error,
        description=config.description,
    )


def _outcomes_by_partition(
    result: Any, profiles: dict[str, dict[str, Any]]
) -> dict[str, list[ExpectationOutcome]]:
    """Each measured hour's verdict per rule from one validation of the table of all of them.

    Every failed per-row expectation lists the hours it found (`unexpected_index_list` on
    the partition column); an hour it does not list passed it. An expectation that failed
    without naming hours (its query failed) cannot be attributed, so it fails every hour.
    """
    from quality.suites.telemetry import PARTITION

    by_partition: dict[str, list[ExpectationOutcome]] = {p: [] for p in profiles}
    for r in result.results:
        config = r.expectation_config
        meta, kwargs, res = config.meta or {}, config.kwargs or {}, r.result or {}
        error = _exception(r)
        failing = {str(row[PARTITION]) for row in res.get("unexpected_index_list") or []}
        if error is not None or (not r.success and not failing):
            failing = set(profiles)
            error = error or "failed without naming the hours it found"
        column = kwargs.get("column") or kwargs.get("column_A")
        for partition, profile in profiles.items():
            bad = partition in failing
            by_partition[partition].append(
                ExpectationOutcome(
                    rule=str(meta.get(RULE, config.type)),
                    dimension=str(meta.get(DIMENSION, "validity")),
                    expectation=config.type,
                    column=column,
                    blocking=_blocking(config),
                    success=not bad,
                    observed=profile.get(column),
                    element_count=1,
                    error=error if bad else None,
                    description=config.description,
                )
            )
    return by_partition


def _read_profiles(client: Client, table: str) -> list[dict[str, Any]]:
    result = client.query(f"SELECT * FROM {table}")
    return [
        {k: _clean(v) for k, v in zip(result.column_names, row, strict=True)}
        for row in result.result_rows
    ]


def _read_profile(client: Client, table: str) -> dict[str, Any]:
    rows = _read_profiles(client, table)
    if len(rows) != 1:
        raise ValueError(f"a materialized batch must be one row of measurements, got {len(rows)}")
    return rows[0]


def _view_name(now: datetime) -> str:
    return f"{_VIEW_PREFIX}t{int(now.timestamp() * 1000)}__{uuid.uuid4().hex[:12]}"


def _drop_stale_views(client: Client, database: str, now: datetime) -> None:
    rows = client.query(
        "SELECT name FROM system.tables WHERE database = {db:String} AND startsWith(name, {p:String})",
        parameters={"db": database, "p": _VIEW_PREFIX},
    ).result_rows
    for (name,) in rows:
        m = _VIEW_NAME.match(name)
        if m and now - datetime.fromtimestamp(int(m["ms"]) / 1000, UTC) > _STALE_VIEW_AFTER:
            client.command(f"DROP TABLE IF EXISTS {quote(database, name)}")


def _asset_name(batch: Batch, token: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", batch.partition)
    return f"{batch.dataset}__{safe}__{token}"


def _remove_leftovers(context: Any, datasource: Any) -> None:
    """Delete run-scoped assets, definitions and checkpoints a crashed run left behind.

    Safe under the context lock: no other run is in progress.
    """
    for checkpoint in list(context.checkpoints.all()):
        if _ASSET_SUFFIX.search(checkpoint.name):
            context.checkpoints.delete(name=checkpoint.name)
    for definition in list(context.validation_definitions.all()):
        if _ASSET_SUFFIX.search(definition.name):
            context.validation_definitions.delete(name=definition.name)
    for asset in list(datasource.assets):
        if _ASSET_SUFFIX.search(asset.name):
            datasource.delete_asset(asset.name)


def _docs_location(settings: Settings, url: str | None) -> tuple[Path | None, str | None]:
    if not url:
        return None, None
    path = Path(unquote(urlsplit(url).path))
    try:
        rel = path.relative_to(qc.docs_site_dir(settings).parent)
    except ValueError:
        return path, None
    return path, rel.as_posix()


@dataclass
class _Validated:
    """One Great Expectations validation of a session: its result and its stored identifier."""

    suite: Any
    batch: Batch
    identifier: Any
    result: Any
    seconds: float
    docs_path: Path | None = None
    docs_relpath: str | None = None


class _Session:
    """One GX context for many validations: run-scoped objects, one Data Docs build."""

    def __init__(
        self, settings: Settings, context: Any, *, run_id: str, now: datetime, ops_database: str
    ) -> None:
        self.settings, self.context = settings, context
        self.run_id, self.now, self.ops_database = run_id, now, ops_database
        self.datasource = context.data_sources.add_or_update_sql(
            name=qc.DATASOURCE, connection_string="${" + qc.URL_VARIABLE + "}"
        )
        _remove_leftovers(context, self.datasource)
        self.validated: list[_Validated] = []

    def validate(
        self, suite: Any, batch: Batch, table: str, result_format: dict[str, Any] | None = None
    ) -> _Validated:
        """Validate `table` (in the ops database) with `suite` through a run-scoped checkpoint."""
        from great_expectations.checkpoint import Checkpoint
        from great_expectations.core.run_identifier import RunIdentifier
        from great_expectations.core.validation_definition import ValidationDefinition

        started = time.perf_counter()
        name = _asset_name(batch, uuid.uuid4().hex[:12])
        asset = self.datasource.add_table_asset(
            name=name, table_name=table, schema_name=self.ops_database
        )
        definition = self.context.validation_definitions.add(
            ValidationDefinition(
                name=name,
                data=asset.add_batch_definition_whole_table("partition"),
                suite=self.context.suites.add_or_update(suite),
            )
        )
        checkpoint = self.context.checkpoints.add(
            Checkpoint(
                name=name,
                validation_definitions=[definition],
                result_format=result_format or {"result_format": "SUMMARY"},
            )
        )
        result = checkpoint.run(
            expectation_parameters=batch.parameters,
            run_id=RunIdentifier(
                run_name=f"{batch.dataset} {batch.partition} {self.run_id}", run_time=self.now
            ),
        )
        identifier, validation = next(iter(result.run_results.items()))
        done = _Validated(suite, batch, identifier, validation, time.perf_counter() - started)
        self.validated.append(done)
        return done

    def build_docs(self) -> float:
        """Render the session's result pages, their suites and the index once; seconds taken."""
        from great_expectations.data_context.types.resource_identifiers import (
            ExpectationSuiteIdentifier,
        )

        started = time.perf_counter()
        suites = {v.suite.name for v in self.validated}
        resources = [v.identifier for v in self.validated]
        resources += [ExpectationSuiteIdentifier(name=name) for name in sorted(suites)]
        self.context.build_data_docs(site_names=[qc.SITE_NAME], resource_identifiers=resources)
        for v in self.validated:
            urls = self.context.get_docs_sites_urls(
                resource_identifier=v.identifier, site_name=qc.SITE_NAME
            )
            v.docs_path, v.docs_relpath = _docs_location(
                self.settings, urls[0]["site_url"] if urls else None
            )
        return time.perf_counter() - started


@contextlib.contextmanager
def _session(
    settings: Settings, *, run_id: str, now: datetime, ops_database: str
) -> Iterator[tuple[_Session, float]]:
    """A GX session under the project lock, and the seconds it took to open."""
    opening = time.perf_counter()
    with qc.open_context(settings) as context:
        session = _Session(settings, context, run_id=run_id, now=now, ops_database=ops_database)
        try:
            yield session, time.perf_counter() - opening
        finally:
            _remove_leftovers(context, session.datasource)


def _validation_outcome(
    session: _Session,
    done: _Validated,
    *,
    results: Sequence[ExpectationOutcome] | None = None,
    partition: str | None = None,
    profile: dict[str, Any] | None = None,
    timings: dict[str, float],
) -> ValidationOutcome:
    """A partition's outcome from a validation (of it alone, or of the table it is a row of)."""
    results = tuple(results if results is not None else (_outcome(r) for r in done.result.results))
    outcome = ValidationOutcome(
        dataset=done.batch.dataset,
        partition=partition or done.batch.partition,
        suite=done.suite.name,
        run_id=session.run_id,
        success=all(r.success for r in results if r.blocking),
        results=results,
        validated_at=session.now,
        duration_s=sum(timings.values()),
        docs_path=done.docs_path,
        docs_url=done.docs_path.as_uri() if done.docs_path else None,
        docs_relpath=done.docs_relpath,
        profile=profile or {},
        timings={k: round(v, 3) for k, v in timings.items()},
    )
    log.info(
        "%s %s: %s (%d expectations, %d failed, %d warnings) in %.2fs",
        outcome.suite,
        outcome.partition,
        "passed" if outcome.success else "FAILED",
        len(results),
        len(outcome.failures),
        len(outcome.warnings),
        outcome.duration_s,
    )
    return outcome


def run_suite(
    settings: Settings,
    suite: gx.ExpectationSuite,
    batch: Batch,
    *,
    run_id: str | None = None,
    ops_database: str = OPS_DATABASE,
    client: Client | None = None,
) -> ValidationOutcome:
    """Validate `batch` with `suite` in the warehouse; store the result and its Data Docs page."""
    return run_suites(
        settings, [(suite, batch)], run_id=run_id, ops_database=ops_database, client=client
    )[0]


def run_suites(
    settings: Settings,
    checks: Sequence[tuple[gx.ExpectationSuite, Batch]],
    *,
    run_id: str | None = None,
    ops_database: str = OPS_DATABASE,
    client: Client | None = None,
) -> list[ValidationOutcome]:
    """Validate several batches in one Great Expectations session and one Data Docs build."""
    from atlasmesh.warehouse.client import connect

    now = datetime.now(UTC)
    run_id = run_id or uuid.uuid4().hex
    own_client = client is None
    client = client or connect(settings)
    views: list[str] = []
    try:
        client.command(f"CREATE DATABASE IF NOT EXISTS {quote(ops_database)}")
        _drop_stale_views(client, ops_database, now)
        prepared = []
        for suite, batch in checks:
            started = time.perf_counter()
            view = _view_name(now)
            views.append(view)
            if batch.materialize:
                client.command(
                    f"CREATE TABLE {quote(ops_database, view)} ENGINE = Memory AS {batch.sql}"
                )
                profile = _read_profile(client, quote(ops_database, view))
            else:
                client.command(f"CREATE VIEW {quote(ops_database, view)} AS {batch.sql}")
                profile = {}
            prepared.append((suite, batch, view, profile, time.perf_counter() - started))
        with _session(settings, run_id=run_id, now=now, ops_database=ops_database) as (
            session,
            open_s,
        ):
            done = [session.validate(suite, batch, view) for suite, batch, view, _, _ in prepared]
            # Costs shared by the session are split evenly among its validations.
            docs_s = session.build_docs() / len(done) if done else 0.0
            return [
                _validation_outcome(
                    session,
                    validated,
                    profile=profile,
                    timings={
                        "measure": measure_s,
                        "open_context": open_s / len(done),
                        "validate": validated.seconds,
                        "data_docs": docs_s,
                    },
                )
                for (_, _, _, profile, measure_s), validated in zip(prepared, done, strict=True)
            ]
    finally:
        for view in views:
            client.command(f"DROP TABLE IF EXISTS {quote(ops_database, view)}")
        if own_client:
            client.close()


def processed_rows(lake: Lake, hour: datetime) -> int:
    """Rows processing published for an event hour: its build manifest, else its Parquet file."""
    from atlasmesh.telemetry import pipeline

    manifest = pipeline.read_build_manifest(lake, hour)
    if manifest is not None:
        return manifest.accepted
    rel = pipeline.processed_path(hour)
    if not lake.exists(rel):
        return 0
    import pyarrow.parquet as pq

    with lake.pyarrow_filesystem().open_input_file(lake.path(rel)) as f:
        return pq.ParquetFile(f).metadata.num_rows


def validate_telemetry_hour(
    settings: Settings,
    hour: datetime,
    *,
    expected_rows: int | None = None,
    lake: Lake | None = None,
    database: str | None = None,
    fleet_core_database: str | None = "fleet_core",
    run_id: str | None = None,
    client: Client | None = None,
) -> ValidationOutcome:
    """The telemetry gate on one event hour of the hot path.

    `expected_rows` defaults to what the lake's processed partition holds (its build
    manifest), so the hot path is checked against what processing published.
    """
    expected = None if expected_rows is None else {hour: expected_rows}
    return validate_telemetry_hours(
        settings,
        [hour],
        expected_rows=expected,
        lake=lake,
        database=database,
        fleet_core_database=fleet_core_database,
        run_id=run_id,
        client=client,
    )[0]


def validate_telemetry_hours(
    settings: Settings,
    hours: Sequence[datetime],
    *,
    expected_rows: dict[datetime, int] | None = None,
    lake: Lake | None = None,
    database: str | None = None,
    fleet_core_database: str | None = "fleet_core",
    run_id: str | None = None,
    client: Client | None = None,
    ops_database: str = OPS_DATABASE,
) -> list[ValidationOutcome]:
    """The telemetry gate on many event hours: one measurement table, one validation of it.

    The hours are measured into one table (a row per hour, `MEASURE_ROWS_PER_QUERY` rows
    scanned per query at most). One hour is validated alone with the hour suite. Several are
    validated together with the per-row form of the same rules, whose failures name their
    hours; an hour that fails a blocking rule there (or every hour, when a failure could not
    be attributed) is validated again alone, so it gets its own verdict and Data Docs page.
    Outcomes come back in the order of `hours`.
    """
    from atlasmesh.lake import Lake
    from atlasmesh.warehouse.client import connect
    from atlasmesh.warehouse.telemetry import DATABASE, LOADS_TABLE
    from quality.suites import telemetry

    hours = [telemetry.on_the_hour(h) for h in hours]
    if not hours:
        return []
    database = database or DATABASE
    now = datetime.now(UTC)
    run_id = run_id or uuid.uuid4().hex
    own_client = client is None
    client = client or connect(settings)
    known = {telemetry.on_the_hour(h): n for h, n in (expected_rows or {}).items()}
    the_lake = None if all(h in known for h in hours) else lake or Lake.from_settings(settings)
    expected = {h: known[h] if h in known else processed_rows(the_lake, h) for h in hours}
    measured = _view_name(now)
    views = [measured]
    try:
        client.command(f"CREATE DATABASE IF NOT EXISTS {quote(ops_database)}")
        _drop_stale_views(client, ops_database, now)
        started = time.perf_counter()
        with_loads = has_table(client, database, LOADS_TABLE)
        for i, group in enumerate(_measure_groups(sorted(set(hours)), expected)):
            sql = telemetry.profile_sql(
                database,
                group,
                fleet_core_database=fleet_core_database,
                with_loads=with_loads,
                expected_rows={h: expected[h] for h in group},
            )
            target = quote(ops_database, measured)
            client.command(
                f"CREATE TABLE {target} ENGINE = Memory AS {sql}"
                if i == 0
                else f"INSERT INTO {target} {sql}"
            )
        profiles = {
            p[telemetry.PARTITION]: p for p in _read_profiles(client, quote(ops_database, measured))
        }
        measure_s = time.perf_counter() - started
        keys = [telemetry.partition_key(h) for h in sorted(set(hours))]
        with _session(settings, run_id=run_id, now=now, ops_database=ops_database) as (
            session,
            open_s,
        ):
            hour_suite = telemetry.telemetry_hour_suite(fleet_core_database=fleet_core_database)

            def alone(key: str, table: str) -> _Validated:
                hour = next(h for h in hours if telemetry.partition_key(h) == key)
                batch = Batch(
                    telemetry.DATASET,
                    key,
                    sql="",
                    parameters={telemetry.EXPECTED_ROWS: expected[hour]},
                )
                return session.validate(hour_suite, batch, table)

            if len(keys) == 1:
                together, by_partition, suspects = None, {}, keys
            else:
                together = session.validate(
                    telemetry.telemetry_hours_suite(fleet_core_database=fleet_core_database),
                    Batch(telemetry.DATASET, f"{keys[0]}..{keys[-1]}", sql=""),
                    measured,
                    result_format={
                        "result_format": "COMPLETE",
                        "unexpected_index_column_names": [telemetry.PARTITION],
                    },
                )
                by_partition = _outcomes_by_partition(together.result, profiles)
                suspects = [
                    key
                    for key, results in by_partition.items()
                    if any(r.blocking and not r.success for r in results)
                ]
            own: dict[str, _Validated] = {}
            for key in suspects:
                table = measured
                if len(keys) > 1:
                    table = _view_name(now)
                    views.append(table)
                    client.command(
                        f"CREATE VIEW {quote(ops_database, table)} AS SELECT * FROM "
                        f"{quote(ops_database, measured)} WHERE {telemetry.PARTITION} = '{key}'"
                    )
                own[key] = alone(key, table)
            docs_s = session.build_docs()
            # Costs shared by the session are split evenly among its hours.
            shared = {
                "measure": measure_s / len(keys),
                "open_context": open_s / len(keys),
                "validate": (together.seconds if together else 0.0) / len(keys),
                "data_docs": docs_s / len(keys),
            }
            outcomes = {}
            for key in keys:
                if key in own:
                    timings = {**shared, "validate": shared["validate"] + own[key].seconds}
                    outcomes[key] = _validation_outcome(
                        session, own[key], profile=profiles[key], timings=timings
                    )
                else:
                    outcomes[key] = _validation_outcome(
                        session,
                        together,
                        results=by_partition[key],
                        partition=key,
                        profile=profiles[key],
                        timings=shared,
                    )
        return [outcomes[telemetry.partition_key(h)] for h in hours]
    finally:
        for view in reversed(views):
            client.command(f"DROP TABLE IF EXISTS {quote(ops_database, view)}")
        if own_client:
            client.close()


def _measure_groups(hours: list[datetime], expected: dict[datetime, int]) -> list[list[datetime]]:
    """Consecutive hours in groups of at most MEASURE_ROWS_PER_QUERY rows (a bigger hour alone)."""
    groups: list[list[datetime]] = [[]]
    rows = 0
    for hour in hours:
        if groups[-1] and (
            rows + expected[hour] > MEASURE_ROWS_PER_QUERY
            or len(groups[-1]) >= MEASURE_HOURS_PER_QUERY
        ):
            groups.append([])
            rows = 0
        groups[-1].append(hour)
        rows += expected[hour]
    return groups


def has_table(client: Client, database: str, table: str) -> bool:
    """True when `database.table` exists."""
    return bool(
        client.query(
            "SELECT count() FROM system.tables WHERE database = {db:String} AND name = {t:String}",
            parameters={"db": database, "t": table},
        ).result_rows[0][0]
    )


def validate_fleet_core(
    settings: Settings,
    tables: list[str] | None = None,
    *,
    database: str | None = None,
    run_id: str | None = None,
    client: Client | None = None,
) -> list[ValidationOutcome]:
    """The fleet-core suites (keys, references, allowed values), one outcome per table."""
    from quality.suites import fleet_core

    database = database or fleet_core.DATABASE
    checks = [
        (
            fleet_core.fleet_core_suite(table, database=database),
            fleet_core.fleet_core_batch(table, database=database),
        )
        for table in (tables or list(fleet_core.RULES))
    ]
    return run_suites(settings, checks, run_id=run_id, client=client)


def validate_mart(
    settings: Settings,
    mart: str | MartSpec,
    day: date | datetime,
    *,
    database: str,
    telemetry_database: str | None = None,
    run_id: str | None = None,
    client: Client | None = None,
) -> ValidationOutcome:
    """One day of a mart (a `suites.marts.KEY_MARTS` name or a spec) in marts `database`."""
    from atlasmesh.warehouse.client import connect
    from atlasmesh.warehouse.telemetry import DATABASE
    from quality.suites import marts

    spec = marts.KEY_MARTS[mart] if isinstance(mart, str) else mart
    own_client = client is None
    client = client or connect(settings)
    try:
        previous = int(
            client.query(marts.row_count_sql(spec, day, database=database)).result_rows[0][0]
        )
        return run_suite(
            settings,
            marts.mart_suite(
                spec, day, database=database, telemetry_database=telemetry_database or DATABASE
            ),
            marts.mart_batch(spec, day, database=database, previous_rows=previous),
            run_id=run_id,
            client=client,
        )
    finally:
        if own_client:
            client.close()
