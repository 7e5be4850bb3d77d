"""The ClickHouse telemetry hot path: schema, and atomic, idempotent, crash-safe hour loads."""

from __future__ import annotations

import io
import itertools
import logging
import re
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import polars as pl
import pyarrow as pa

from atlasmesh.telemetry.registry import PROCESSED_SCHEMA
from atlasmesh.warehouse.protocol import quote_string

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

    from atlasmesh.lake import Lake, LakeEntry

log = logging.getLogger("atlasmesh.warehouse.telemetry")

DATABASE = "atlasmesh_analytics"
TELEMETRY_TABLE = "vehicle_telemetry"
METRICS_STATE_TABLE = "vehicle_metrics_hourly_state"
METRICS_VIEW = "vehicle_metrics_hourly"
LOADS_TABLE = "telemetry_loads"
LATEST_LOADS_VIEW = "telemetry_loads_latest"
PROCESSED_PREFIX = "processed/vehicle_telemetry"
RETENTION_DAYS = 90
# One INSERT into the stage (about one part) ends at CHUNK_ROWS rows or CHUNK_BYTES of
# Arrow IPC, whichever comes first. The client streams it batch by batch, but chDB buffers
# an Arrow insert whole before parsing it (in process and behind the warehouse service):
# loading 950 k rows (~0.8 KB each) in one INSERT peaked at 2.3 GB RSS in process, in
# INSERTs of ~64 MB at 0.8 GB, flat whatever the hour's size.
CHUNK_ROWS = 131_072
CHUNK_BYTES = 64 * 2**20
# Rows per batch read from Parquet and sent: the reader's buffers grow with it (reading a
# processed hour took ~300 MB RSS above the imports in 65 k-row batches, ~170 MB in 16 k).
BATCH_ROWS = 16_384
# When the warehouse reads a processed file itself: a 950 k-row hour took 2.7 s in one
# insert thread and 1.3-1.5 s in two (2 cores), against 3.4-4.1 s streamed as Arrow. The
# engine's memory, inserting a 3.5 M-row file into the stage (chDB behind the service):
# - blocks of 32 MiB, not 64: each insert thread holds a block and its sorted copy;
# - the file read with pread: chDB maps it by default, and its pages count in the RSS;
# - compact stage parts (`_prepare_file_stage`): a wide part writes one buffered stream per
#   column, ~0.5 GB for two writers of this 35-column table.
# Together: service peak 1.8 GB -> 0.9 GB, insert 5.3 -> 3.5 s (docs/telemetry_pipeline.md).
FILE_INSERT_SETTINGS = {
    "max_insert_threads": 2,
    "min_insert_block_size_rows": CHUNK_ROWS,
    "min_insert_block_size_bytes": 32 * 2**20,
    "input_format_parquet_memory_high_watermark": 128 * 2**20,
    "storage_file_read_method": "pread",
}
# Files per INSERT when the warehouse reads them itself: one statement (one round trip) for
# a day of hours, well inside the 256 KiB a query may hold.
FILES_PER_INSERT = 48
# A stage of another hour is only dropped once this old: younger ones may belong to a
# loader that is still running (hours load concurrently).
STALE_STAGE_AFTER = timedelta(hours=1)
METRICS_SWAP_ATTEMPTS = 5
STAGE_PREFIX = "_stage__"
_STAGE_NAME = re.compile(
    r"^_stage__(?P<table>\w+?)__h(?P<hour>\d+)__t(?P<ms>\d+)__(?P<id>[0-9a-f]+)$"
)
_LOAD_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")

# Uncompressed: pyarrow's IPC LZ4 writer alone added ~450 MB RSS on a 3.6 M-row hour.
_IPC_OPTIONS = pa.ipc.IpcWriteOptions()
_UUID_COLUMNS = frozenset({"telemetry_id", "vehicle_id"})
_LOW_CARDINALITY = frozenset(
    {"operational_status", "schema_version", "firmware_version", "source_file"}
)


class LoadError(RuntimeError):
    """An hour could not be loaded; the message says what, where and how to fix it."""


class SchemaMismatchError(LoadError):
    """An existing warehouse table does not have the columns this code writes."""


@dataclass(frozen=True)
class LoadResult:
    """What one hour load swapped in: its rows, content checksum, metrics rows and timings."""

    load_id: str
    hour: datetime
    rows: int
    checksum: int
    metrics_rows: int
    duration_s: float
    loaded_at: datetime
    stale_stages_dropped: tuple[str, ...] = ()
    # Seconds per step: stage (read, check, send), summary (count, checksum), swap
    # (telemetry), metrics (day rebuild and check), log.
    phases_s: dict[str, float] = field(default_factory=dict)
    # True when the warehouse read the hour's Parquet files itself instead of being sent rows.
    read_from_lake: bool = False

    @property
    def rows_per_s(self) -> float:
        """Load throughput."""
        return self.rows / self.duration_s if self.duration_s > 0 else 0.0


def _arrow_to_clickhouse(f: pa.Field) -> str:
    t = f.type
    if f.name in _UUID_COLUMNS:
        base = "UUID"
    elif pa.types.is_timestamp(t):
        base = "DateTime64(3, 'UTC')"
    elif pa.types.is_floating(t):
        base = "Float64"
    elif pa.types.is_integer(t):
        base = "Int64"
    elif pa.types.is_string(t) or pa.types.is_large_string(t):
        base = "String"
    elif pa.types.is_list(t) and pa.types.is_string(t.value_type):
        # A list is never NULL in ClickHouse: an absent list is an empty one.
        return "Array(String)"
    else:
        raise TypeError(f"processed column {f.name!r} has type {t}, which has no mapping")
    if f.nullable:
        base = f"Nullable({base})"
    if f.name in _LOW_CARDINALITY:
        base = f"LowCardinality({base})"
    return base


# Every processed column, in the processed order, then the lineage column of the load.
TELEMETRY_COLUMNS: dict[str, str] = {
    **{f.name: _arrow_to_clickhouse(f) for f in PROCESSED_SCHEMA},
    "load_id": "LowCardinality(String)",
}
# The content checksum covers the processed columns only: a re-run has a new load_id but
# must give the same checksum.
CONTENT_COLUMNS: tuple[str, ...] = tuple(PROCESSED_SCHEMA.names)

METRICS_COLUMNS: dict[str, str] = {
    "vehicle_id": "UUID",
    "hour": "DateTime('UTC')",
    "telemetry_count": "SimpleAggregateFunction(sum, UInt64)",
    "speed_sum": "SimpleAggregateFunction(sum, Float64)",
    "max_speed": "SimpleAggregateFunction(max, Float64)",
    "battery_sum": "SimpleAggregateFunction(sum, Float64)",
    "battery_count": "SimpleAggregateFunction(sum, UInt64)",
    "min_battery": "SimpleAggregateFunction(min, Nullable(Float64))",
    "fuel_sum": "SimpleAggregateFunction(sum, Float64)",
    "fuel_count": "SimpleAggregateFunction(sum, UInt64)",
    "min_fuel": "SimpleAggregateFunction(min, Nullable(Float64))",
    "rows_with_dtc": "SimpleAggregateFunction(sum, UInt64)",
    "load_id": "SimpleAggregateFunction(max, String)",
}

_METRICS_SELECT = """
SELECT
    vehicle_id,
    toStartOfHour(recorded_at) AS hour,
    count() AS telemetry_count,
    sum(speed_kmh) AS speed_sum,
    max(speed_kmh) AS max_speed,
    sumIf(battery_level_percent, battery_level_percent IS NOT NULL) AS battery_sum,
    count(battery_level_percent) AS battery_count,
    min(battery_level_percent) AS min_battery,
    sumIf(fuel_level_percent, fuel_level_percent IS NOT NULL) AS fuel_sum,
    count(fuel_level_percent) AS fuel_count,
    min(fuel_level_percent) AS min_fuel,
    countIf(notEmpty(diagnostic_codes)) AS rows_with_dtc,
    max(src.load_id) AS load_id
FROM {source} AS src
GROUP BY vehicle_id, hour
"""

# Averages are finalised at read time from sums and counts, so they stay right whatever
# the state of merges (the seed's avg() in a SummingMergeTree summed averages).
_METRICS_VIEW_SELECT = """
SELECT
    vehicle_id,
    hour,
    n AS telemetry_count,
    speed / n AS avg_speed,
    top_speed AS max_speed,
    if(battery_n = 0, NULL, battery / battery_n) AS avg_battery,
    low_battery AS min_battery,
    if(fuel_n = 0, NULL, fuel / fuel_n) AS avg_fuel,
    low_fuel AS min_fuel,
    dtc AS rows_with_dtc,
    last_load AS load_id
FROM (
    SELECT
        vehicle_id,
        hour,
        sum(telemetry_count) AS n,
        sum(speed_sum) AS speed,
        max(max_speed) AS top_speed,
        sum(battery_sum) AS battery,
        sum(battery_count) AS battery_n,
        min(min_battery) AS low_battery,
        sum(fuel_sum) AS fuel,
        sum(fuel_count) AS fuel_n,
        min(min_fuel) AS low_fuel,
        sum(rows_with_dtc) AS dtc,
        max(load_id) AS last_load
    FROM {state}
    GROUP BY vehicle_id, hour
)
"""


def metrics_state_sql(source: str) -> str:
    """SELECT of hourly metrics state rows from telemetry-shaped rows of `source` (qualified name).

    Any split of the rows into several inserts gives the same view after merges.
    """
    return _METRICS_SELECT.format(source=source)


LOADS_COLUMNS: dict[str, str] = {
    "load_id": "String",
    "hour": "DateTime('UTC')",
    "rows": "UInt64",
    "checksum": "UInt64",
    "metrics_rows": "UInt64",
    "started_at": "DateTime64(3, 'UTC')",
    # When the hour became queryable: the freshness clock "recorded_at to queryable".
    "loaded_at": "DateTime64(3, 'UTC')",
    "duration_s": "Float64",
    "max_recorded_at": "Nullable(DateTime64(3, 'UTC'))",
    "max_ingested_at": "Nullable(DateTime64(3, 'UTC'))",
    "source": "String",
}


# The seed's `location Tuple(Float64, Float64)` (latitude, longitude) for queries written to
# it: computed on read, never stored or inserted, left out of `SELECT *`; partition swaps
# between tables that differ only by it work (decision 0002).
LOCATION_ALIAS = "`location` Tuple(Float64, Float64) ALIAS (latitude, longitude)"


def _q(*names: str) -> str:
    return ".".join(f"`{n}`" for n in names)


def _columns_sql(columns: dict[str, str]) -> str:
    return ",\n    ".join(f"`{name}` {ctype}" for name, ctype in columns.items())


def schema_statements(database: str = DATABASE) -> list[str]:
    """The DDL of the hot path, in execution order (each statement idempotent)."""
    ttl = f"toStartOfHour(recorded_at) + INTERVAL {RETENTION_DAYS} DAY"
    return [
        f"CREATE DATABASE IF NOT EXISTS `{database}`",
        # One partition per event hour: the unit REPLACE PARTITION swaps atomically, and
        # the unit the TTL drops whole (ttl_only_drop_parts), see docs/decisions/0002.
        f"""CREATE TABLE IF NOT EXISTS {_q(database, TELEMETRY_TABLE)} (
    {_columns_sql(TELEMETRY_COLUMNS)},
    {LOCATION_ALIAS}
)
ENGINE = MergeTree
PARTITION BY toStartOfHour(recorded_at)
ORDER BY (vehicle_id, recorded_at)
TTL {ttl}
SETTINGS ttl_only_drop_parts = 1""",
        # Day partitions: an hour of metrics is ~1 row per vehicle, too small for a part of
        # its own (2,160 tiny parts slowed 90-day reads 7x); a day is rebuilt around the hour.
        f"""CREATE TABLE IF NOT EXISTS {_q(database, METRICS_STATE_TABLE)} (
    {_columns_sql(METRICS_COLUMNS)}
)
ENGINE = AggregatingMergeTree
PARTITION BY toDate(hour)
ORDER BY (vehicle_id, hour)
TTL hour + INTERVAL {RETENTION_DAYS} DAY
SETTINGS ttl_only_drop_parts = 1""",
        f"CREATE VIEW IF NOT EXISTS {_q(database, METRICS_VIEW)} AS "
        + _METRICS_VIEW_SELECT.format(state=_q(database, METRICS_STATE_TABLE)),
        f"""CREATE TABLE IF NOT EXISTS {_q(database, LOADS_TABLE)} (
    {_columns_sql(LOADS_COLUMNS)}
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, loaded_at)""",
        f"""CREATE VIEW IF NOT EXISTS {_q(database, LATEST_LOADS_VIEW)} AS
SELECT
    l.hour AS hour,
    argMax(l.load_id, l.loaded_at) AS load_id,
    argMax(l.rows, l.loaded_at) AS rows,
    argMax(l.checksum, l.loaded_at) AS checksum,
    max(l.loaded_at) AS loaded_at,
    argMax(l.max_recorded_at, l.loaded_at) AS max_recorded_at,
    argMax(l.max_ingested_at, l.loaded_at) AS max_ingested_at,
    count() AS loads
FROM {_q(database, LOADS_TABLE)} AS l
GROUP BY l.hour""",
    ]


_EXPECTED: dict[str, dict[str, str]] = {
    TELEMETRY_TABLE: TELEMETRY_COLUMNS,
    METRICS_STATE_TABLE: METRICS_COLUMNS,
    LOADS_TABLE: LOADS_COLUMNS,
}
# The swaps name partition IDs of these keys: another key would make them miss or fail.
_PARTITION_KEYS = {
    TELEMETRY_TABLE: "toStartOfHour(recorded_at)",
    METRICS_STATE_TABLE: "toDate(hour)",
}
_TABLE_EXISTS = 57


@dataclass(frozen=True)
class _Schema:
    """What the warehouse holds of the hot path, read in one query."""

    objects: frozenset[str]  # hot-path tables and views present
    partition_keys: dict[str, str]
    columns: dict[str, dict[str, str]]  # table -> column -> type, in table order
    stages: list[str]  # staging tables present
    aliases: dict[str, set[str]]  # table -> ALIAS columns (computed on read, not checked)


_OBJECTS = (TELEMETRY_TABLE, METRICS_STATE_TABLE, METRICS_VIEW, LOADS_TABLE, LATEST_LOADS_VIEW)


def _inspect(client: Client, database: str) -> _Schema:
    # One round trip for what every load checks: each one used to cost ~0.15 s of an
    # hour's ~0.3 s publish at demo size (eight statements), see docs/telemetry_pipeline.md.
    rows = client.query(
        "SELECT kind, tbl, col, type FROM ("
        "SELECT 'object' AS kind, name AS tbl, '' AS col, partition_key AS type, 0 AS position "
        "FROM system.tables WHERE database = {db:String} "
        "AND (name IN {objects:Array(String)} OR startsWith(name, {prefix:String})) "
        "UNION ALL SELECT if(default_kind = 'ALIAS', 'alias', 'column'), table, name, type, "
        "position FROM system.columns "
        "WHERE database = {db:String} AND table IN {tables:Array(String)}"
        ") ORDER BY kind, tbl, position",
        parameters={
            "db": database,
            "objects": list(_OBJECTS),
            "prefix": STAGE_PREFIX,
            "tables": list(_EXPECTED),
        },
    ).result_rows
    objects: set[str] = set()
    keys: dict[str, str] = {}
    columns: dict[str, dict[str, str]] = {}
    stages: list[str] = []
    aliases: dict[str, set[str]] = {}
    for kind, table, name, ctype in rows:
        if kind == "column":
            columns.setdefault(table, {})[name] = ctype
        elif kind == "alias":
            aliases.setdefault(table, set()).add(name)
        elif table.startswith(STAGE_PREFIX):
            stages.append(table)
        else:
            objects.add(table)
            keys[table] = ctype
    return _Schema(frozenset(objects), keys, columns, sorted(stages), aliases)


def ensure_schema(client: Client, database: str = DATABASE) -> None:
    """Create the hot-path database, tables and views if missing; refuse a table whose columns differ."""
    _ensure(client, database)


def _ensure(client: Client, database: str) -> _Schema:
    """`ensure_schema`, returning what it found (the stages too): one query when all is in place."""
    schema = _inspect(client, database)
    if schema.objects != set(_OBJECTS):
        for statement in schema_statements(database):
            try:
                client.command(statement)
            except Exception as exc:
                # Two loaders racing on CREATE ... IF NOT EXISTS: the loser may see "exists".
                if getattr(exc, "code", None) != _TABLE_EXISTS and "already exists" not in str(exc):
                    raise
        schema = _inspect(client, database)
    _check_tables(schema, database)
    if "location" not in schema.aliases.get(TELEMETRY_TABLE, set()):
        # A table created before the alias existed gains it (metadata only).
        client.command(
            f"ALTER TABLE {_q(database, TELEMETRY_TABLE)} ADD COLUMN IF NOT EXISTS {LOCATION_ALIAS}"
        )
    return schema


def _check_tables(schema: _Schema, database: str) -> None:
    problems: list[str] = []
    for table, expected in _EXPECTED.items():
        have = schema.columns.get(table, {})
        for name, ctype in expected.items():
            if name not in have:
                problems.append(f"{database}.{table}: column {name!r} ({ctype}) is missing")
            elif _normal(have[name]) != _normal(ctype):
                problems.append(
                    f"{database}.{table}: column {name!r} is {have[name]}, expected {ctype}"
                )
        for name in have.keys() - expected.keys():
            problems.append(f"{database}.{table}: unexpected column {name!r} ({have[name]})")
    keys = schema.partition_keys
    for table, key in _PARTITION_KEYS.items():
        if keys.get(table, key) != key:
            problems.append(f"{database}.{table}: partitioned by {keys[table]}, expected {key}")
    if problems:
        raise SchemaMismatchError(
            "the warehouse holds hot-path tables of another version of the platform:\n  - "
            + "\n  - ".join(problems)
            + "\nFix: migrate the table (ALTER TABLE ... ADD/MODIFY COLUMN), or, if its data can "
            "be reloaded from the lake, drop it and re-run the hour loads."
        )


def _normal(ctype: str) -> str:
    return ctype.replace(" ", "").replace('"', "'")


def partition_id(hour: datetime) -> str:
    """ClickHouse's partition ID of an event hour: a DateTime key's ID is its Unix seconds."""
    return str(int(_utc_hour(hour).timestamp()))


def _utc_hour(hour: datetime) -> datetime:
    if not isinstance(hour, datetime):
        raise LoadError(f"hour must be a datetime, got {type(hour).__name__} {hour!r}")
    if hour.tzinfo is None:
        raise LoadError(
            f"hour {hour.isoformat()} has no time zone; pass an aware UTC datetime "
            "(e.g. datetime(2026, 11, 1, 3, tzinfo=UTC))"
        )
    hour = hour.astimezone(UTC)
    if (hour.minute, hour.second, hour.microsecond) != (0, 0, 0):
        raise LoadError(
            f"hour {hour.isoformat()} is not the start of an hour; pass "
            f"{hour.replace(minute=0, second=0, microsecond=0).isoformat()}"
        )
    return hour


def stage_tables(client: Client, database: str = DATABASE) -> list[str]:
    """Names of the staging tables that exist right now (in use, or left by a killed loader)."""
    rows = client.query(
        "SELECT name FROM system.tables WHERE database = {db:String} "
        "AND startsWith(name, {prefix:String}) ORDER BY name",
        parameters={"db": database, "prefix": STAGE_PREFIX},
    ).result_rows
    return [r[0] for r in rows]


def drop_stale_stages(
    client: Client,
    database: str = DATABASE,
    *,
    hour: datetime | None = None,
    older_than: timedelta = STALE_STAGE_AFTER,
    now: datetime | None = None,
) -> list[str]:
    """Drop stages of `hour` (a new load of it supersedes them) and any stage older than `older_than`."""
    return _drop_stale(
        client,
        database,
        stage_tables(client, database),
        hours=[] if hour is None else [hour],
        older_than=older_than,
        now=now,
    )


def _drop_stale(
    client: Client,
    database: str,
    names: Iterable[str],
    *,
    hours: Iterable[datetime],
    older_than: timedelta = STALE_STAGE_AFTER,
    now: datetime | None = None,
) -> list[str]:
    now = now or datetime.now(UTC)
    keys = {partition_id(h) for h in hours}
    dropped: list[str] = []
    for name in names:
        m = _STAGE_NAME.match(name)
        if m is None:
            continue
        created = datetime.fromtimestamp(int(m["ms"]) / 1000, UTC)
        if m["hour"] in keys or now - created > older_than:
            dropped.append(name)
    if dropped:
        client.command(f"DROP TABLE IF EXISTS {_qs(database, dropped)} SYNC")
        log.warning("dropped %d stale staging table(s) in %s: %s", len(dropped), database, dropped)
    return dropped


def _qs(database: str, tables: Iterable[str]) -> str:
    """Several qualified names, for one DROP TABLE of them all (one round trip)."""
    return ", ".join(_q(database, t) for t in tables)


def _stage_name(table: str, hour: datetime, created: datetime, token: str) -> str:
    return (
        f"{STAGE_PREFIX}{table}__h{partition_id(hour)}__t{int(created.timestamp() * 1000)}__{token}"
    )


def hour_content(
    client: Client, hour: datetime, database: str = DATABASE, table: str = TELEMETRY_TABLE
) -> tuple[int, int]:
    """(rows, checksum) of one hour of a telemetry-shaped table; equal content gives equal checksums.

    The checksum is an order-independent sum (mod 2^64) of a hash of each row's processed
    columns: a duplicated row changes it, unlike an XOR.
    """
    hour = _utc_hour(hour)
    rows, checksum, *_ = _summary(
        client,
        _q(database, table),
        "WHERE toStartOfHour(recorded_at) = toDateTime({h:UInt32}, 'UTC')",
        {"h": int(hour.timestamp())},
    )
    return rows, checksum


# The content checksum expression (see hour_content).
CHECKSUM_SQL = f"sum(cityHash64(tuple({', '.join(f'`{c}`' for c in CONTENT_COLUMNS)})))"


def _summary(
    client: Client, source: str, where: str = "", parameters: dict[str, Any] | None = None
) -> tuple[int, int, datetime | None, datetime | None, int]:
    """Rows, checksum, newest recorded_at and ingested_at, and vehicles of telemetry rows."""
    row = client.query(
        f"SELECT count(), {CHECKSUM_SQL}, if(count() = 0, NULL, max(recorded_at)), "
        f"if(count() = 0, NULL, max(ingested_at)), uniqExact(vehicle_id) FROM {source} {where}",
        parameters=parameters or {},
    ).result_rows[0]
    return int(row[0]), int(row[1] or 0), row[2], row[3], int(row[4])


def load_hour(
    client: Client,
    hour: datetime,
    batches: Iterable[pa.RecordBatch] | pa.Table,
    *,
    load_id: str | None = None,
    database: str = DATABASE,
    source: str = "arrow",
    chunk_rows: int = CHUNK_ROWS,
    chunk_bytes: int = CHUNK_BYTES,
) -> LoadResult:
    """Replace exactly one event hour of telemetry and its hourly metrics, atomically.

    The rows are staged in a fresh table of the same structure and swapped in as the hour's
    partition with REPLACE PARTITION (DROP PARTITION when the hour is empty); then the
    metrics of the hour's day are rebuilt around it from the telemetry and swapped in the
    same way. Readers see the old hour or the new one, never a part of it, and a re-run
    replaces instead of adding. A loader killed midway leaves only its stages, which the
    next load of that hour (or any load an hour later) drops.
    """
    part = _Part(_utc_hour(hour), batches, _checked_load_id(load_id), source)
    return _load(client, [part], database, chunk_rows, chunk_bytes)[0]


def load_hours(
    client: Client,
    batches_by_hour: Mapping[datetime, Iterable[pa.RecordBatch] | pa.Table],
    *,
    database: str = DATABASE,
    sources: Mapping[datetime, str] | None = None,
    chunk_rows: int = CHUNK_ROWS,
    chunk_bytes: int = CHUNK_BYTES,
) -> list[LoadResult]:
    """`load_hour` for several hours at once: one stage, one REPLACE PARTITION per hour.

    Each hour is still swapped in atomically and gets its own load id, checksum and load
    row; what is shared is the fixed cost (schema check, stage tables, inserts, summary,
    one metrics rebuild per day, the log insert), which is most of a small hour's load.
    Results come back in hour order; each one's `duration_s` is its share of the call.
    """
    parts = [
        _Part(_utc_hour(h), b, uuid.uuid4().hex, (sources or {}).get(h, "arrow"))
        for h, b in sorted(batches_by_hour.items())
    ]
    return _load(client, parts, database, chunk_rows, chunk_bytes)


def _checked_load_id(load_id: str | None) -> str:
    load_id = load_id or uuid.uuid4().hex
    if not _LOAD_ID.match(load_id):
        raise LoadError(
            f"load_id {load_id!r} must be 1-128 characters of letters, digits and _ . : -"
        )
    return load_id


@dataclass(frozen=True)
class _LakeFile:
    """A processed Parquet file whose footer proves the checks streaming would make."""

    path: str
    rows: int
    columns: frozenset[str]


@dataclass
class _Part:
    """One hour of a load: its rows, its load id, where they came from, and how many were sent."""

    hour: datetime
    batches: Iterable[pa.RecordBatch] | pa.Table
    load_id: str
    source: str
    sent: int = 0
    # The hour's files when the warehouse may read them itself instead of being sent them.
    files: list[_LakeFile] | None = None

    def checked(self) -> Iterator[pa.RecordBatch]:
        for batch in _checked_batches(self.batches, self.hour, self.load_id):
            self.sent += batch.num_rows
            yield batch


_NO_ROWS = (0, 0, None, None, 0)


def _load(
    client: Client, parts: list[_Part], database: str, chunk_rows: int, chunk_bytes: int
) -> list[LoadResult]:
    """Stage the parts' rows together, swap each hour in, rebuild each day's metrics, log."""
    if not parts:
        return []
    started = time.perf_counter()
    started_at = datetime.now(UTC)
    hours = [p.hour for p in parts]
    if len(set(hours)) != len(hours):
        raise LoadError(f"hours {sorted(hours)} repeat an hour; give each hour once")
    what = (
        f"telemetry hour {hours[0]:%Y-%m-%dT%H}:00Z (load {parts[0].load_id})"
        if len(parts) == 1
        else f"telemetry hours {min(hours):%Y-%m-%dT%H}:00Z..{max(hours):%Y-%m-%dT%H}:00Z "
        f"({len(hours)} hours)"
    )
    schema = _ensure(client, database)
    stale = _drop_stale(client, database, schema.stages, hours=hours)
    token = uuid.uuid4().hex[:12]
    # Named by the first hour: a later load of that hour drops it as superseded, a load of
    # another of its hours once it is older than STALE_STAGE_AFTER.
    t_stage = _stage_name(TELEMETRY_TABLE, min(hours), started_at, token)
    m_stage = _stage_name(METRICS_STATE_TABLE, min(hours), started_at, token)
    for hour in hours:
        if hour < started_at - timedelta(days=RETENTION_DAYS):
            log.warning(
                "hour %s is older than the %d-day hot retention: the TTL will drop it again",
                f"{hour:%Y-%m-%dT%H}",
                RETENTION_DAYS,
            )
    swapped: list[str] = []
    phases: dict[str, float] = {}
    since = time.perf_counter()

    def mark(phase: str) -> None:
        nonlocal since
        now = time.perf_counter()
        phases[phase], since = now - since, now

    try:
        client.command(f"CREATE TABLE {_q(database, t_stage)} AS {_q(database, TELEMETRY_TABLE)}")
        client.command(
            f"CREATE TABLE {_q(database, m_stage)} AS {_q(database, METRICS_STATE_TABLE)}"
        )
        _keep_files_the_warehouse_reads(client, parts)
        direct = [p for p in parts if p.files]
        if direct:
            _prepare_file_stage(client, database, t_stage)
        sent = _stage_rows(
            client,
            _q(database, t_stage),
            itertools.chain.from_iterable(p.checked() for p in parts if not p.files),
            chunk_rows,
            chunk_bytes,
            # One INSERT is one part, and one part never merges: merges are stopped only
            # before a second INSERT, so a small hour spares the round trip.
            before_second=None if direct else lambda: _pause_merges(client, database, t_stage),
        )
        sent += _stage_files(client, _q(database, t_stage), direct)
        mark("stage")
        summaries = _hour_summaries(client, _q(database, t_stage))
        mark("summary")
        for p in parts:
            rows = summaries.get(p.hour, _NO_ROWS)[0]
            if rows != p.sent:
                # An insert retried or cut short by the transport: never swap such a stage in.
                raise LoadError(
                    f"the stage holds {rows} rows of hour {p.hour:%Y-%m-%dT%H}:00Z but "
                    f"{p.sent} were sent; nothing was swapped in"
                )
        if sum(s[0] for s in summaries.values()) != sent:
            raise LoadError(
                f"the stage holds other rows than the {sent} sent; nothing was swapped in"
            )
        telemetry = _q(database, TELEMETRY_TABLE)
        for p in parts:
            pid = partition_id(p.hour)
            if summaries.get(p.hour, _NO_ROWS)[0]:
                client.command(
                    f"ALTER TABLE {telemetry} REPLACE PARTITION ID '{pid}' "
                    f"FROM {_q(database, t_stage)}"
                )
            else:
                client.command(f"ALTER TABLE {telemetry} DROP PARTITION ID '{pid}'")
            swapped.append(f"{TELEMETRY_TABLE} {p.hour:%Y-%m-%dT%H}")
        mark("swap")
        # The metrics follow a moment later: a crash in between is healed by the re-run
        # the failed load needs, or by the next load of any hour of that day.
        metrics_rows: dict[datetime, int] = {}
        loaded_at: dict[datetime, datetime] = {}
        days = itertools.groupby(hours, key=lambda h: h.date())
        for i, (day, day_hours) in enumerate(days):
            fresh = {h: summaries.get(h, _NO_ROWS)[4] for h in day_hours}
            metrics_rows |= _swap_metrics_day(client, database, fresh, m_stage, truncate=i > 0)
            loaded_at |= dict.fromkeys(fresh, datetime.now(UTC))
            swapped.append(f"{METRICS_STATE_TABLE} {day}")
        mark("metrics")
        duration = (time.perf_counter() - started) / len(parts)
        log_rows = (
            {
                "load_id": p.load_id,
                "hour": _ch_time(p.hour, 0),
                "rows": summaries.get(p.hour, _NO_ROWS)[0],
                "checksum": summaries.get(p.hour, _NO_ROWS)[1],
                "metrics_rows": metrics_rows[p.hour],
                "started_at": _ch_time(started_at),
                "loaded_at": _ch_time(loaded_at[p.hour]),
                "duration_s": duration,
                "max_recorded_at": _ch_time(summaries.get(p.hour, _NO_ROWS)[2]),
                "max_ingested_at": _ch_time(summaries.get(p.hour, _NO_ROWS)[3]),
                "source": p.source,
            }
            for p in parts
        )
        # JSON rows sent with the statement: one round trip (`client.insert` first asks for
        # the column types) and no pandas import (clickhouse-connect's insert imports it).
        columns = ", ".join(f"`{c}`" for c in LOADS_COLUMNS)
        client.command(
            f"INSERT INTO {_q(database, LOADS_TABLE)} ({columns}) FORMAT JSONEachRow",
            data=b"".join(orjson.dumps(row) + b"\n" for row in log_rows),
        )
        mark("log")
    except LoadError:
        raise
    except Exception as exc:
        state = (
            f"already replaced: {', '.join(swapped)}"
            if swapped
            else "the warehouse still holds the previous content"
        )
        raise LoadError(
            f"loading {what} into {database} failed: {_first_line(exc)}\n({state}); "
            "re-run the load."
        ) from exc
    finally:
        _drop_quietly(client, database, t_stage, m_stage)
    results = []
    for p in parts:
        rows, checksum, *_ = summaries.get(p.hour, _NO_ROWS)
        log.info(
            "loaded telemetry hour %s: %d rows, %d metrics rows in %.2fs (load %s)",
            f"{p.hour:%Y-%m-%dT%H}",
            rows,
            metrics_rows[p.hour],
            duration,
            p.load_id,
        )
        results.append(
            LoadResult(
                load_id=p.load_id,
                hour=p.hour,
                rows=rows,
                checksum=checksum,
                metrics_rows=metrics_rows[p.hour],
                duration_s=duration,
                loaded_at=loaded_at[p.hour],
                stale_stages_dropped=tuple(stale),
                phases_s=phases,
                read_from_lake=bool(p.files),
            )
        )
    return results


def _lake_file(path: str, hour: datetime) -> _LakeFile | None:
    """The file if its footer proves what `_checked_batches` would check row by row, else None.

    Every processed column present with its processed type, required ones declared
    non-nullable (so no row can hold a null), and row-group statistics putting every
    recorded_at inside the hour. Anything else is streamed, and checked, as before.
    """
    import pyarrow.parquet as pq

    try:
        meta = pq.read_metadata(path)
        schema = meta.schema.to_arrow_schema()
    except (OSError, pa.ArrowInvalid):
        return None
    names = set(schema.names)
    for f in PROCESSED_SCHEMA:
        if f.name not in names:
            if not f.nullable:
                return None
            continue
        got = schema.field(f.name)
        if not got.type.equals(f.type) or (got.nullable and not f.nullable):
            return None
    start_ms = int(hour.timestamp() * 1000)
    column = schema.get_field_index("recorded_at")
    for g in range(meta.num_row_groups):
        stats = meta.row_group(g).column(column).statistics
        if stats is None or not stats.has_min_max:
            return None
        if stats.min_raw < start_ms or stats.max_raw >= start_ms + 3_600_000:
            return None
    return _LakeFile(path, meta.num_rows, frozenset(names & set(PROCESSED_SCHEMA.names)))


def _keep_files_the_warehouse_reads(client: Client, parts: list[_Part]) -> None:
    """Forget the parts' files unless the warehouse can read them: it must see the same files."""
    probe = next((p.files[0] for p in parts if p.files), None)
    if probe is None:
        return
    try:
        # A remote server, or one that may not read outside its user_files_path, fails here.
        rows = client.command(
            f"SELECT count() FROM file({quote_string(probe.path)}, Parquet)",
            settings=FILE_INSERT_SETTINGS,
        )
    except Exception as exc:
        log.debug("the warehouse cannot read %s (%s): streaming", probe.path, _first_line(exc))
        rows = None
    if rows is None or int(rows) != probe.rows:
        for p in parts:
            p.files = None


def _stage_files(client: Client, stage: str, parts: list[_Part]) -> int:
    """Have the warehouse read the parts' files into the stage; return the rows staged."""
    selects = []
    for p in parts:
        for f in p.files or ():
            cols = [_q(c) if c in f.columns else f"NULL AS {_q(c)}" for c in PROCESSED_SCHEMA.names]
            selects.append(
                f"SELECT {', '.join(cols)}, {quote_string(p.load_id)} AS load_id "
                f"FROM file({quote_string(f.path)}, Parquet)"
            )
        p.sent = sum(f.rows for f in p.files or ())
    columns = ", ".join(_q(c) for c in TELEMETRY_COLUMNS)
    for i in range(0, len(selects), FILES_PER_INSERT):
        client.command(
            f"INSERT INTO {stage} ({columns}) "
            + " UNION ALL ".join(selects[i : i + FILES_PER_INSERT]),
            settings=FILE_INSERT_SETTINGS,
        )
    return sum(p.sent for p in parts)


def _ch_time(value: datetime | None, digits: int = 3) -> str | None:
    """A time as ClickHouse reads it into a UTC DateTime/DateTime64 column (naive means UTC)."""
    if value is None:
        return None
    value = value.astimezone(UTC) if value.tzinfo else value
    text = value.strftime("%Y-%m-%d %H:%M:%S.%f")
    return text[: 20 + digits] if digits else text[:19]


def _hour_summaries(
    client: Client, source: str
) -> dict[datetime, tuple[int, int, datetime | None, datetime | None, int]]:
    """`_summary` of each hour of a stage, in one query."""
    rows = client.query(
        f"SELECT toUInt32(toStartOfHour(recorded_at)) AS h, count(), {CHECKSUM_SQL}, "
        f"max(recorded_at), max(ingested_at), uniqExact(vehicle_id) FROM {source} GROUP BY h"
    ).result_rows
    return {
        datetime.fromtimestamp(h, UTC): (int(n), int(c or 0), r, i, int(v))
        for h, n, c, r, i, v in rows
    }


def _hours_sql(hours: Iterable[datetime]) -> str:
    return ", ".join(f"toDateTime({int(h.timestamp())}, 'UTC')" for h in sorted(hours))


def _swap_metrics_day(
    client: Client, database: str, fresh: dict[datetime, int], stage: str, truncate: bool
) -> dict[datetime, int]:
    """Rebuild the metrics of one day around `fresh` hours from the telemetry, swap the day in, verify.

    Two loads of hours of one day may interleave; the later day swap can then carry the
    other hour's old metrics. Each load therefore checks every hour of the day against the
    telemetry (by load_id) after its swap and rebuilds the hours that lag. `fresh` maps the
    hours just swapped in to their vehicles (their metrics rows), so the first round need
    not count the stage when none is empty. Returns the metrics rows of each fresh hour.
    """
    telemetry, state = _q(database, TELEMETRY_TABLE), _q(database, METRICS_STATE_TABLE)
    first = min(fresh)
    stage_q, day = _q(database, stage), f"toDate('{first:%Y-%m-%d}')"
    rebuild = set(fresh)
    for attempt in range(METRICS_SWAP_ATTEMPTS):
        hours = _hours_sql(rebuild)
        if attempt or truncate:
            client.command(f"TRUNCATE TABLE {stage_q}")
        # The day's other hours as they are, and the rebuilt hours recomputed: one statement.
        client.command(
            f"INSERT INTO {stage_q} SELECT * FROM {state} "
            f"WHERE toDate(hour) = {day} AND hour NOT IN ({hours}) UNION ALL "
            + metrics_state_sql(
                f"(SELECT * FROM {telemetry} WHERE toStartOfHour(recorded_at) IN ({hours}))"
            )
        )
        if not attempt and all(fresh.values()):
            counts, any_rows = dict(fresh), True
        else:
            per_hour = {
                datetime.fromtimestamp(h, UTC): int(n)
                for h, n in client.query(
                    f"SELECT toUInt32(hour), count() FROM {stage_q} GROUP BY hour"
                ).result_rows
            }
            counts, any_rows = {h: per_hour.get(h, 0) for h in fresh}, bool(per_hour)
        if any_rows:
            client.command(
                f"ALTER TABLE {state} REPLACE PARTITION ID '{first:%Y%m%d}' FROM {stage_q}"
            )
        else:
            client.command(f"ALTER TABLE {state} DROP PARTITION ID '{first:%Y%m%d}'")
        lagging = _lagging_hours(client, database, first)
        if not lagging:
            return counts
        log.info("rebuilding metrics of %d hour(s) that lag their telemetry", len(lagging))
        rebuild = set(lagging)
    raise LoadError(
        f"the hourly metrics of {first:%Y-%m-%d} kept lagging the telemetry after "
        f"{METRICS_SWAP_ATTEMPTS} rebuilds (loads of that day running at the same time?); "
        "re-run the load of this hour"
    )


def _lagging_hours(client: Client, database: str, hour: datetime) -> list[datetime]:
    """Hours of `hour`'s day whose metrics were not built from the telemetry now in place.

    Load ids alone are not enough: under concurrent day swaps on the embedded service
    (about 1 in 12 runs of four loads of one day) a rebuild could read an hour's metrics
    twice, or keep an older load's rows beside the new ones, so the row counts must match too.
    """
    day = f"toDate('{hour:%Y-%m-%d}')"
    rows = client.query(
        f"""SELECT toUInt32(h) FROM (
    SELECT toStartOfHour(recorded_at) AS h, any(load_id) AS l, count() AS n
    FROM {_q(database, TELEMETRY_TABLE)} WHERE toDate(recorded_at) = {day} GROUP BY h
) AS t
FULL OUTER JOIN (
    SELECT hour AS h, max(load_id) AS l, uniqExact(load_id) AS loads, sum(telemetry_count) AS n
    FROM {_q(database, METRICS_STATE_TABLE)} WHERE toDate(hour) = {day} GROUP BY h
) AS m USING (h)
WHERE t.l != m.l OR m.loads > 1 OR t.n != m.n"""
    ).result_rows
    return [datetime.fromtimestamp(r[0], UTC) for r in rows]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:500] if text else type(exc).__name__


def _pause_merges(client: Client, database: str, table: str) -> None:
    """Stop background merges of a stage: its parts are swapped into the hour as they are."""
    # Merging the stage's parts (an INSERT per CHUNK_BYTES) would compete with the load for
    # the cores (950 k rows: 14-18 s instead of 20); the hour's partition merges them later,
    # off the load's path. An engine that refuses the statement only loads slower.
    try:
        client.command(f"SYSTEM STOP MERGES {_q(database, table)}")
    except Exception as exc:
        log.debug("could not stop merges of %s.%s: %s", database, table, _first_line(exc))


def _prepare_file_stage(client: Client, database: str, table: str) -> None:
    """Ready a stage for file inserts: merges stopped, every part written compact."""
    # A file insert writes several parts (one per insert thread) from the start. Compact
    # parts keep a block's columns in one stream; the hour's partition merges them into wide
    # parts later, as it merges any small parts.
    _pause_merges(client, database, table)
    try:
        client.command(
            f"ALTER TABLE {_q(database, table)} MODIFY SETTING "
            f"min_bytes_for_wide_part = {2**62}, min_rows_for_wide_part = {2**62}"
        )
    except Exception as exc:
        log.debug("could not make %s.%s write compact parts: %s", database, table, _first_line(exc))


def _drop_quietly(client: Client, database: str, *tables: str) -> None:
    try:
        client.command(f"DROP TABLE IF EXISTS {_qs(database, tables)} SYNC")
    except Exception as exc:
        # A stage that cannot be dropped now is dropped by a later load as stale.
        log.warning("could not drop staging tables %s.%s: %s", database, tables, _first_line(exc))


def _stage_rows(
    client: Client,
    stage: str,
    batches: Iterator[pa.RecordBatch],
    chunk_rows: int,
    chunk_bytes: int = CHUNK_BYTES,
    before_second: Callable[[], None] | None = None,
) -> int:
    """Stream checked batches into the stage, one INSERT per chunk; return the rows sent."""
    sent = 0
    first = next(batches, None)
    while first is not None:
        if sent and before_second is not None:
            before_second()
            before_second = None
        chunk = _Chunk(first, batches, chunk_rows, chunk_bytes)
        client.raw_insert(stage, first.schema.names, chunk.body(), fmt="ArrowStream")
        if chunk.error is not None:
            raise chunk.error
        sent += chunk.rows
        first = chunk.following
    return sent


class _Chunk:
    """The body of one INSERT: an Arrow IPC stream of batches up to a row or byte limit."""

    def __init__(
        self,
        first: pa.RecordBatch,
        rest: Iterator[pa.RecordBatch],
        limit: int,
        byte_limit: int = CHUNK_BYTES,
    ):
        self.first, self.rest, self.limit, self.byte_limit = first, rest, limit, byte_limit
        self.rows = 0
        self.bytes = 0
        self.following: pa.RecordBatch | None = None
        self.error: BaseException | None = None

    def body(self) -> Iterator[bytes]:
        """IPC bytes, a batch at a time: memory holds one batch, whatever the chunk size."""
        sink = io.BytesIO()
        writer = pa.ipc.new_stream(sink, self.first.schema, options=_IPC_OPTIONS)
        batch: pa.RecordBatch | None = self.first
        try:
            while batch is not None:
                writer.write_batch(batch)
                self.rows += batch.num_rows
                piece = _take(sink)
                self.bytes += len(piece)
                yield piece
                batch = next(self.rest, None)
                if batch is not None and (self.rows >= self.limit or self.bytes >= self.byte_limit):
                    self.following = batch
                    break
        except Exception as exc:
            # Raised inside an HTTP body the error would be wrapped, or the request
            # retried with a half-used iterator: end the stream, and the caller raises it.
            self.error = exc
        writer.close()
        yield _take(sink)


def _take(sink: io.BytesIO) -> bytes:
    data = sink.getvalue()
    sink.seek(0)
    sink.truncate()
    return data


def _checked_batches(
    batches: Iterable[pa.RecordBatch] | pa.Table, hour: datetime, load_id: str
) -> Iterator[pa.RecordBatch]:
    import pyarrow.compute as pc

    if isinstance(batches, pa.Table):
        batches = batches.to_batches()
    # Arrow values built from buffers and polars: pa.scalar() and pa.array() of Python or
    # numpy values import pandas on first use (0.4-0.7 s per process).
    start_ms = int(hour.timestamp() * 1000)
    bounds = np.array([start_ms, start_ms + 3_600_000], dtype=np.int64)
    ms = pa.timestamp("ms", tz="UTC")
    lo, hi = pa.Array.from_buffers(ms, 2, [None, pa.py_buffer(bounds)])
    where = f"telemetry hour {hour:%Y-%m-%dT%H}:00Z"
    # One dictionary shared by every batch: the IPC stream then carries it once.
    zeros = np.zeros(BATCH_ROWS, np.int8)
    lineage = pa.DictionaryArray.from_arrays(
        pa.Array.from_buffers(pa.int8(), BATCH_ROWS, [None, pa.py_buffer(zeros)]),
        pl.Series([load_id], dtype=pl.String).to_arrow().cast(pa.string()),
    )
    for whole in batches:
        # Zero-copy slices: a caller's one huge batch still streams in bounded pieces.
        for start in range(0, whole.num_rows, BATCH_ROWS):
            batch = _conform(whole.slice(start, BATCH_ROWS), where)
            recorded = batch.column("recorded_at")
            outside = pc.or_kleene(pc.less(recorded, lo), pc.greater_equal(recorded, hi))
            outside = pc.or_kleene(pc.is_null(outside), outside)  # a null time is outside too
            n_outside = pc.sum(outside).as_py() or 0
            if n_outside:
                first = batch.filter(outside).slice(0, 1).to_pylist()[0]
                raise LoadError(
                    f"{n_outside} row(s) given for {where} have recorded_at outside that hour, "
                    f"e.g. {first['recorded_at']} (telemetry_id {first['telemetry_id']}, "
                    f"{first['source_file']} line {first['line_number']}). Processed partitions "
                    "hold rows of their event hour only: re-run processing for the hour, or pass "
                    "the right hour."
                )
            yield pa.RecordBatch.from_arrays(
                [*batch.columns, lineage.slice(0, batch.num_rows)],
                names=[*batch.schema.names, "load_id"],
            )


def _conform(batch: pa.RecordBatch, where: str) -> pa.RecordBatch:
    names = set(batch.schema.names)
    missing = [f.name for f in PROCESSED_SCHEMA if f.name not in names and not f.nullable]
    if missing:
        raise LoadError(
            f"batches for {where} lack processed column(s) {missing}; they must follow "
            "atlasmesh.telemetry.registry.PROCESSED_SCHEMA (read processed Parquet, not landing)"
        )
    # Files written before an optional column existed read as nulls in it; partition
    # columns (date, hour) and other extras are not part of the table.
    batch = pa.RecordBatch.from_arrays(
        [
            batch.column(f.name) if f.name in names else pa.nulls(batch.num_rows, f.type)
            for f in PROCESSED_SCHEMA
        ],
        names=PROCESSED_SCHEMA.names,
    )
    # ClickHouse would store a NULL in a non-Nullable column as 0 or '' without a word.
    nulls = [f.name for f in PROCESSED_SCHEMA if not f.nullable and batch.column(f.name).null_count]
    if nulls:
        raise LoadError(
            f"batches for {where} hold nulls in required column(s) {nulls}; processing must "
            "dead-letter such records (MISSING_FIELD) instead of passing them on"
        )
    if batch.schema.equals(PROCESSED_SCHEMA, check_metadata=False):
        return batch
    try:
        return batch.cast(PROCESSED_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
        raise LoadError(
            f"batches for {where} do not fit PROCESSED_SCHEMA: {_first_line(exc)}; "
            "re-run processing so its output follows the registry's processed schema"
        ) from exc


def processed_hour_path(hour: datetime) -> str:
    """Lake path of one event hour of processed telemetry (`.../date=YYYY-MM-DD/hour=HH`)."""
    from atlasmesh.telemetry.validate import partition_path

    return partition_path(PROCESSED_PREFIX, _utc_hour(hour))


def iter_lake_hour(
    lake: Lake, hour: datetime, *, batch_rows: int = BATCH_ROWS, missing_ok: bool = False
) -> Iterator[pa.RecordBatch]:
    """Stream one processed hour from the lake in record batches, one file at a time."""
    yield from _read_lake_files(lake, hour, _hour_files(lake, hour, missing_ok), batch_rows)


def _read_lake_files(
    lake: Lake, hour: datetime, entries: list[LakeEntry], batch_rows: int
) -> Iterator[pa.RecordBatch]:
    """Record batches of the listed files of one processed hour, one file at a time."""
    import pyarrow.parquet as pq

    fs = lake.pyarrow_filesystem()
    for entry in entries:
        try:
            # ParquetFile.iter_batches: measured faster and leaner than a dataset scan here
            # (3.6 M rows: 4.3 s / 0.40 GB RSS against 11.9 s / 0.47 GB). Without pre-buffering:
            # it keeps what it read of the file, +220 MB RSS by the end of a 3.8 M-row hour.
            with (
                fs.open_input_file(lake.path(entry.path)) as f,
                pq.ParquetFile(f, pre_buffer=False) as pf,
            ):
                names = set(pf.schema_arrow.names)
                yield from pf.iter_batches(
                    batch_size=batch_rows,
                    columns=[n for n in PROCESSED_SCHEMA.names if n in names],
                )
        except (OSError, pa.ArrowInvalid) as exc:
            raise LoadError(
                f"cannot read processed telemetry file {lake.uri(entry.path)}: "
                f"{_first_line(exc)}; re-run processing for hour {hour:%Y-%m-%dT%H}:00Z"
            ) from exc


def _hour_files(lake: Lake, hour: datetime, missing_ok: bool) -> list[LakeEntry]:
    """The processed Parquet files of an hour; none if it may be missing, else an error."""
    rel = processed_hour_path(hour)
    files = [e for e in lake.ls(rel) if not e.is_dir and e.path.endswith(".parquet")]
    if not files and not lake.exists(rel) and not missing_ok:
        raise LoadError(
            f"no processed telemetry at {lake.uri(rel)}; run processing for that hour first, "
            "or pass missing_ok=True to load it as an empty hour (which clears it)"
        )
    return files


def _lake_part(lake: Lake, hour: datetime, load_id: str, missing_ok: bool) -> _Part:
    """One hour of the lake as a load part, readable by the warehouse itself where it can."""
    hour = _utc_hour(hour)
    entries = _hour_files(lake, hour, missing_ok)
    part = _Part(
        hour,
        _read_lake_files(lake, hour, entries, BATCH_ROWS),
        load_id,
        lake.uri(processed_hour_path(hour)),
    )
    if not lake.is_s3:
        # An S3 lake is streamed: reading it from the server needs credentials there.
        found = [_lake_file(lake.path(e.path), hour) for e in entries]
        files = [f for f in found if f is not None]
        if files and len(files) == len(found):
            part.files = files
    return part


def load_hour_from_lake(
    client: Client,
    lake: Lake,
    hour: datetime,
    *,
    load_id: str | None = None,
    database: str = DATABASE,
    missing_ok: bool = False,
    chunk_rows: int = CHUNK_ROWS,
    chunk_bytes: int = CHUNK_BYTES,
) -> LoadResult:
    """Load one processed event hour from the lake into the warehouse (see `load_hour`).

    A warehouse that sees the lake's files (the embedded service, a local lake) reads them
    itself; otherwise, or when a file's footer does not prove it fits, rows are streamed.
    """
    part = _lake_part(lake, hour, _checked_load_id(load_id), missing_ok)
    return _load(client, [part], database, chunk_rows, chunk_bytes)[0]


def load_hours_from_lake(
    client: Client,
    lake: Lake,
    hours: Iterable[datetime],
    *,
    database: str = DATABASE,
    missing_ok: bool | Collection[datetime] = False,
    chunk_rows: int = CHUNK_ROWS,
    chunk_bytes: int = CHUNK_BYTES,
) -> list[LoadResult]:
    """Load several processed event hours from the lake at once (see `load_hours`).

    `missing_ok` is True for every hour, or the hours that may have no processed file
    (loaded as empty, which clears them).
    """
    wanted = sorted({_utc_hour(h) for h in hours})

    def may_miss(hour: datetime) -> bool:
        return missing_ok if isinstance(missing_ok, bool) else hour in missing_ok

    parts = [_lake_part(lake, h, uuid.uuid4().hex, may_miss(h)) for h in wanted]
    return _load(client, parts, database, chunk_rows, chunk_bytes)
