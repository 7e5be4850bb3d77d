"""Incremental, allow-listed extraction of the fleet-core tables into the lake and ClickHouse."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa

from atlasmesh.fleet_core import db
from atlasmesh.fleet_core.db import FleetCoreError

if TYPE_CHECKING:
    import pyarrow as pa
    from clickhouse_connect.driver.client import Client
    from sqlalchemy.engine import Connection, Engine

    from atlasmesh.lake import Lake

log = logging.getLogger(__name__)

DATABASE = "fleet_core"
LAKE_PREFIX = "snapshots/fleet_core"
DEFAULT_OVERLAP = timedelta(minutes=10)
DEFAULT_CHUNK_ROWS = 50_000

# Credentials the Fleet OS needs and the platform must never hold. Checked against the
# allow-list at import and again before every SELECT, so adding one to the allow-list by
# mistake fails loudly instead of copying secrets into the lake.
DENIED_COLUMNS = frozenset({"password_hash", "private_key_pem", "encrypted_value"})
# Catches renamed credentials (e.g. a future `password_salt` or `encrypted_value_v2`).
DENIED_FRAGMENTS = ("password", "private_key", "encrypted_value")

_STAMPS = {"created_at": "timestamptz", "updated_at": "timestamptz"}
_DELETED = {"deleted_at": "timestamptz?"}

# THE allow-list: per table, the columns extracted and their kind ("?" = nullable). The
# first column is the primary key. A source column that is neither here nor in EXCLUDED is
# not extracted and is reported as unlisted, so a new migration cannot leak a column.
ALLOW_LIST: dict[str, dict[str, str]] = {
    "organizations": {
        "organization_id": "uuid",
        "name": "text",
        "sector": "text",
        "configuration": "json?",
        "entitlements": "json?",
        "subscription_tier": "text?",
        "is_active": "bool",
        **_STAMPS,
        **_DELETED,
    },
    "fleets": {
        "fleet_id": "uuid",
        "organization_id": "uuid",
        "name": "text",
        "sector": "text",
        "configuration": "json?",
        "status": "text?",
        "metadata": "json?",
        **_STAMPS,
        **_DELETED,
    },
    "vehicles": {
        "vehicle_id": "uuid",
        "fleet_id": "uuid",
        "asset_tag": "text",
        "manufacturer": "text",
        "model": "text",
        "serial_number": "text",
        "vehicle_profile": "json",
        "current_status": "text?",
        "current_latitude": "float?",
        "current_longitude": "float?",
        "last_seen": "timestamptz?",
        "capabilities": "json?",
        "sensor_config": "json?",
        **_STAMPS,
        **_DELETED,
    },
    "routes": {
        "route_id": "uuid",
        "organization_id": "uuid",
        "name": "text",
        "waypoints": "json",
        "distance_km": "float?",
        "estimated_duration_minutes": "int?",
        "constraints": "json?",
        "optimization_params": "json?",
        "created_by": "text?",
        "status": "text?",
        **_STAMPS,
        **_DELETED,
    },
    "trips": {
        "trip_id": "uuid",
        "vehicle_id": "uuid",
        "route_id": "uuid",
        "mission_type": "text",
        "status": "text",
        "origin_latitude": "float?",
        "origin_longitude": "float?",
        "destination_latitude": "float?",
        "destination_longitude": "float?",
        "scheduled_start": "timestamptz?",
        "actual_start": "timestamptz?",
        "scheduled_end": "timestamptz?",
        "actual_end": "timestamptz?",
        "trip_parameters": "json?",
        "telemetry_summary": "json?",
        **_STAMPS,
        **_DELETED,
    },
    "policies": {
        "policy_id": "uuid",
        "organization_id": "uuid",
        "name": "text",
        "version": "text",
        "rego_code": "text?",
        "policy_schema": "json?",
        "sector": "text?",
        "environment": "text?",
        "is_active": "bool",
        "effective_from": "timestamptz?",
        "effective_until": "timestamptz?",
        "created_by": "text?",
        **_STAMPS,
        **_DELETED,
    },
    "policy_decisions": {
        "decision_id": "uuid",
        "policy_id": "uuid",
        "vehicle_id": "uuid",
        "trip_id": "uuid?",
        "action": "text",
        "decision": "text",
        "reason": "text?",
        "constraints": "json?",
        "context": "json?",
        "decided_at": "timestamptz",
        **_STAMPS,
    },
    "vehicle_commands": {
        "command_id": "uuid",
        "vehicle_id": "uuid",
        "command_type": "text",
        "parameters": "json?",
        "status": "text",
        "issued_at": "timestamptz",
        "executed_at": "timestamptz?",
        "expires_at": "timestamptz?",
        "issued_by": "text?",
        "response_data": "json?",
        "priority": "text?",
        **_STAMPS,
    },
    "maintenance_records": {
        "maintenance_id": "uuid",
        "vehicle_id": "uuid",
        "maintenance_type": "text",
        "component": "text?",
        "description": "text?",
        "scheduled_date": "timestamptz?",
        "completed_date": "timestamptz?",
        "performed_by": "text?",
        "parts_used": "json?",
        "cost": "float?",
        "downtime_hours": "float?",
        "diagnostic_results": "json?",
        "status": "text",
        **_STAMPS,
        **_DELETED,
    },
    "alerts": {
        "alert_id": "uuid",
        "vehicle_id": "uuid",
        "trip_id": "uuid?",
        "alert_type": "text",
        "severity": "text",
        "message": "text?",
        "context_data": "json?",
        "triggered_at": "timestamptz",
        "acknowledged_at": "timestamptz?",
        "resolved_at": "timestamptz?",
        "acknowledged_by": "text?",
        "resolved_by": "text?",
        "status": "text",
        **_STAMPS,
    },
    "users": {
        "user_id": "uuid",
        "organization_id": "uuid",
        "username": "text",
        "email": "text?",
        "roles": "json?",
        "permissions": "json?",
        "is_active": "bool",
        "last_login": "timestamptz?",
        **_STAMPS,
        **_DELETED,
    },
    "certificates": {
        "certificate_id": "uuid",
        "vehicle_id": "uuid",
        "certificate_type": "text",
        "issued_at": "timestamptz",
        "expires_at": "timestamptz",
        "issuer": "text?",
        "subject": "text?",
        "is_revoked": "bool",
        "revoked_at": "timestamptz?",
        **_STAMPS,
    },
    "secrets": {
        "secret_id": "uuid",
        "organization_id": "uuid",
        "secret_name": "text",
        "secret_type": "text",
        "encryption_key_id": "text?",
        "expires_at": "timestamptz?",
        "created_by": "text?",
        "access_policy": "json?",
        **_STAMPS,
        **_DELETED,
    },
}

# Source columns deliberately left out, with the reason; everything else must be allowed.
EXCLUDED: dict[str, dict[str, str]] = {
    "users": {"password_hash": "credential"},
    "certificates": {
        "private_key_pem": "credential",
        # ARCHITECTURE §4: certificates are extracted as metadata only; the public PEM is
        # bulky and no mart needs it.
        "certificate_pem": "payload, not metadata",
    },
    "secrets": {"encrypted_value": "credential"},
}

_CH_TYPES = {
    "uuid": "UUID",
    "json": "String",
    # Microseconds, as the source keeps them: _version comes from updated_at, and two
    # updates within one millisecond must still order correctly.
    "timestamptz": "DateTime64(6, 'UTC')",
    "bool": "Bool",
    "float": "Float64",
    "int": "Int64",
    "text": "String",
}
_META_CH_TYPES = {
    "_is_deleted": "Bool",
    "_version": "UInt64",
    "_row_hash": "UInt64",
    "_extracted_at": "DateTime64(6, 'UTC')",
}
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# The store's SQLite timestamp layout (db.timestamp_text) as a GLOB pattern, and the same
# layout computed by SQLite from any other ISO text it can read (milliseconds only).
_SQLITE_LAYOUT = (
    "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9] [0-9][0-9]:[0-9][0-9]:[0-9][0-9]."
    + "[0-9]" * 6
    + "+00:00"
)
_SQLITE_UTC = "strftime('%Y-%m-%d %H:%M:%f000+00:00', updated_at)"


class ExtractError(FleetCoreError):
    """Extraction refused its input or could not reach a source or target; the message says why."""


@dataclass(frozen=True)
class Column:
    """One extracted column: its name, kind and whether the source allows NULL."""

    name: str
    kind: str
    nullable: bool

    @property
    def clickhouse_type(self) -> str:
        """The ClickHouse type of the column."""
        base = _CH_TYPES[self.kind]
        return f"Nullable({base})" if self.nullable else base


@dataclass(frozen=True)
class TableSpec:
    """An extracted table: its primary key, allowed columns and whether it soft-deletes."""

    name: str
    columns: tuple[Column, ...]

    @property
    def key(self) -> str:
        """The primary-key column (the first of the allow-list)."""
        return self.columns[0].name

    @property
    def column_names(self) -> list[str]:
        """Allowed column names in extraction order."""
        return [c.name for c in self.columns]

    @property
    def soft_delete(self) -> bool:
        """True when deletes arrive as rows with deleted_at set."""
        return "deleted_at" in self.column_names


@dataclass(frozen=True)
class ExtractResult:
    """What one extraction of one table did, for logs and asset metadata."""

    table: str
    rows_read: int
    rows_written: int
    rows_unchanged: int
    deletes: int
    bytes_written: int
    files: tuple[str, ...]
    watermark_before: datetime | None
    watermark_after: datetime | None
    read_from: datetime | None
    read_until: datetime
    duration_s: float
    unlisted_columns: tuple[str, ...] = field(default=())

    def metadata(self) -> dict[str, Any]:
        """Plain values for asset metadata (counts, bytes, duration, watermarks)."""

        def stamp(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "rows_read": self.rows_read,
            "rows_written": self.rows_written,
            "rows_unchanged": self.rows_unchanged,
            "deletes": self.deletes,
            "bytes_written": self.bytes_written,
            "files": len(self.files),
            "watermark_before": stamp(self.watermark_before),
            "watermark_after": stamp(self.watermark_after),
            "read_from": stamp(self.read_from),
            "duration_s": round(self.duration_s, 3),
            "unlisted_columns": list(self.unlisted_columns),
        }


def check_allow_list(
    allow_list: Mapping[str, Mapping[str, str]],
) -> dict[str, TableSpec]:
    """Validate an allow-list (no denied column, known kinds, stamps present) into specs."""
    specs: dict[str, TableSpec] = {}
    for table, columns in allow_list.items():
        _refuse_denied(table, columns)
        parsed: list[Column] = []
        for name, declared in columns.items():
            kind = declared.rstrip("?")
            if kind not in _CH_TYPES:
                raise ExtractError(
                    f"allow-list {table}.{name}: unknown kind {declared!r}; use one of "
                    f"{', '.join(sorted(_CH_TYPES))}, with '?' for nullable"
                )
            if name.startswith("_"):
                raise ExtractError(
                    f"allow-list {table}.{name}: names starting with '_' are reserved for "
                    "extraction bookkeeping (_version, _is_deleted, ...)"
                )
            parsed.append(Column(name, kind, declared.endswith("?")))
        if not parsed or parsed[0].nullable:
            raise ExtractError(
                f"allow-list {table}: the first column must be the NOT NULL primary key"
            )
        names = [c.name for c in parsed]
        if "updated_at" not in names or "created_at" not in names:
            raise ExtractError(
                f"allow-list {table}: created_at and updated_at are required (updated_at is "
                "the extraction watermark)"
            )
        specs[table] = TableSpec(table, tuple(parsed))
    return specs


def _refuse_denied(table: str, columns: Iterable[str]) -> None:
    for name in columns:
        lowered = name.lower()
        if lowered in DENIED_COLUMNS or any(f in lowered for f in DENIED_FRAGMENTS):
            raise ExtractError(
                f"refusing to extract {table}.{name}: it is a credential on the deny-list "
                f"({', '.join(sorted(DENIED_COLUMNS))}); remove it from ALLOW_LIST in "
                "atlasmesh/fleet_core/extract.py"
            )


SPECS = check_allow_list(ALLOW_LIST)


def spec(table: str) -> TableSpec:
    """The spec of one table, or a clear error naming the known tables."""
    found = SPECS.get(table)
    if found is None:
        raise ExtractError(
            f"unknown fleet-core table {table!r}; extracted tables are: {', '.join(SPECS)}"
        )
    return found


# --- ClickHouse ---------------------------------------------------------------------------


def clickhouse_ddl(table: str, database: str = DATABASE) -> list[str]:
    """Statements creating the database, the table and its `<table>_current` view."""
    info = spec(table)
    columns = [f"    `{c.name}` {c.clickhouse_type}" for c in info.columns]
    columns += [f"    `{name}` {kind}" for name, kind in _META_CH_TYPES.items()]
    # The watermark lookups and the per-chunk "already extracted?" check filter on
    # updated_at; the table is ordered by key, so a minmax index keeps them cheap.
    columns.append("    INDEX updated_at_minmax updated_at TYPE minmax GRANULARITY 1")
    body = ",\n".join(columns)
    visible = ", ".join(f"`{c}`" for c in [*info.column_names, "_extracted_at"])
    return [
        f"CREATE DATABASE IF NOT EXISTS `{database}`",
        f"CREATE TABLE IF NOT EXISTS `{database}`.`{table}` (\n{body}\n)\n"
        # The row with the highest _version (updated_at in microseconds) wins; a soft delete
        # is a newer version with _is_deleted set, so FINAL shows the delete, not the row.
        f"ENGINE = ReplacingMergeTree(_version)\nORDER BY `{info.key}`",
        f"CREATE OR REPLACE VIEW `{database}`.`{table}_current` AS SELECT {visible} "
        f"FROM `{database}`.`{table}` FINAL WHERE NOT _is_deleted",
    ]


def ensure_warehouse_schema(
    client: Client,
    tables: Sequence[str] | None = None,
    database: str = DATABASE,
    *,
    missing_only: bool = False,
) -> list[str]:
    """Create missing tables and views, add newly allowed columns, refuse denied ones.

    Returns the tables that gained columns: their old rows lack the new values, so they
    must be re-read in full. One catalog query when nothing changed. `missing_only` leaves
    existing tables alone (for callers that cannot re-read what gains columns).
    """
    chosen = [spec(t) for t in (tables if tables is not None else SPECS)]
    with _warehouse_errors(client, f"read the catalog of database {database}"):
        rows = client.query(
            "SELECT table, name, type FROM system.columns WHERE database = {db:String}",
            parameters={"db": database},
        ).result_rows
    existing: dict[str, dict[str, str]] = {}
    for table, name, kind in rows:
        existing.setdefault(table, {})[name] = kind
    if missing_only:
        chosen = [info for info in chosen if info.name not in existing]
    return [
        info.name
        for info in chosen
        if _ensure_table(client, info, database, existing.get(info.name, {}), existing)
    ]


def _ensure_table(
    client: Client,
    info: TableSpec,
    database: str,
    have: dict[str, str],
    catalog: dict[str, dict[str, str]],
) -> bool:
    """Bring one table and its view up to the allow-list; True if columns were added."""
    create_db, create_table, create_view = clickhouse_ddl(info.name, database)
    _refuse_denied(f"{database}.{info.name} (warehouse)", have)
    if not have:
        with _warehouse_errors(client, f"create {database}.{info.name}"):
            if not catalog:
                client.command(create_db)
            client.command(create_table)
        catalog[info.name] = have = _wanted_columns(info)
    added = False
    for name, kind in _wanted_columns(info).items():
        if name not in have:
            added = True
            with _warehouse_errors(client, f"add column {name} to {database}.{info.name}"):
                client.command(f"ALTER TABLE `{database}`.`{info.name}` ADD COLUMN `{name}` {kind}")
        elif have[name] != kind:
            raise ExtractError(
                f"warehouse column {database}.{info.name}.{name} is {have[name]}, the "
                f"allow-list says {kind}; drop table {database}.{info.name} and extract again "
                "(it is rebuilt from the source in full)"
            )
    view = catalog.get(f"{info.name}_current", {})
    if list(view) != [*info.column_names, "_extracted_at"]:
        with _warehouse_errors(client, f"create view {database}.{info.name}_current"):
            client.command(create_view)
    return added


def _wanted_columns(info: TableSpec) -> dict[str, str]:
    return {c.name: c.clickhouse_type for c in info.columns} | _META_CH_TYPES


@contextmanager
def _warehouse_errors(client: Client, action: str) -> Iterator[None]:
    """Turn ClickHouse driver failures into an ExtractError naming the action and the fix."""
    from clickhouse_connect.driver.exceptions import ClickHouseError

    try:
        yield
    except ClickHouseError as exc:
        text = str(exc).strip()
        first = text.splitlines()[0][:500] if text else type(exc).__name__
        url = getattr(client, "url", "the warehouse")
        raise ExtractError(
            f"warehouse failed to {action} ({url}): {first}; check ATLASMESH_CLICKHOUSE_URL "
            "or start the embedded one with `atlasmesh warehouse serve`"
        ) from exc


def _micros(value: datetime) -> int:
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _from_micros(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def warehouse_watermarks(
    client: Client, tables: Sequence[str] | None = None, database: str = DATABASE
) -> dict[str, datetime | None]:
    """Per table, the newest updated_at already in the warehouse, or None when it is empty."""
    chosen = [spec(t).name for t in (tables if tables is not None else SPECS)]
    query = " UNION ALL ".join(
        f"SELECT '{name}', count(), toUnixTimestamp64Micro(max(updated_at)) "
        f"FROM `{database}`.`{name}`"
        for name in chosen
    )
    with _warehouse_errors(client, f"read the watermarks of database {database}"):
        rows = client.query(query).result_rows
    found = {name: _from_micros(int(newest)) if count else None for name, count, newest in rows}
    return {name: found[name] for name in chosen}


def _known_versions(
    client: Client, info: TableSpec, database: str, low: datetime, high: datetime
) -> set[tuple[str, int]]:
    """(key, row hash) of warehouse rows whose updated_at lies in [low, high]."""
    query = (
        f"SELECT toString(`{info.key}`), _row_hash FROM `{database}`.`{info.name}` "
        f"WHERE updated_at BETWEEN fromUnixTimestamp64Micro({_micros(low)}, 'UTC') "
        f"AND fromUnixTimestamp64Micro({_micros(high)}, 'UTC')"
    )
    with _warehouse_errors(client, f"look up extracted rows of {database}.{info.name}"):
        return {(key, int(digest)) for key, digest in client.query(query).result_rows}


# --- source -------------------------------------------------------------------------------


def _source_columns(connection: Connection, table: str) -> dict[str, bool]:
    """Column name -> nullable, as the source catalog says; empty if the table is missing."""
    if connection.dialect.name == "sqlite":
        rows = connection.exec_driver_sql(f'PRAGMA table_info("{table}")').all()
        return {name: not notnull and not pk for _cid, name, _t, notnull, _d, pk in rows}
    rows = connection.execute(
        sa.text(
            "SELECT column_name, is_nullable FROM information_schema.columns "
            "WHERE table_schema = :schema AND table_name = :table"
        ),
        {"schema": db.PG_SCHEMA, "table": table},
    ).all()
    return {name: nullable == "YES" for name, nullable in rows}


def _check_source(connection: Connection, info: TableSpec, where: str) -> tuple[str, ...]:
    """Fail on a missing table or column; return source columns neither allowed nor excluded."""
    source = _source_columns(connection, info.name)
    if not source:
        raise ExtractError(
            f"the fleet-core database {where} has no table {info.name!r}; run "
            "`atlasmesh fleet-core migrate` against it first"
        )
    missing = [c.name for c in info.columns if c.name not in source]
    if missing:
        raise ExtractError(
            f"{where}: table {info.name!r} lacks allow-listed column(s) {', '.join(missing)}; "
            "migrate the database, or fix ALLOW_LIST in atlasmesh/fleet_core/extract.py"
        )
    loose = [c.name for c in info.columns if source[c.name] and not c.nullable]
    if loose:
        raise ExtractError(
            f"{where}: {info.name}.{', '.join(loose)} allow(s) NULL in the source but the "
            "allow-list declares NOT NULL; mark the kind with '?' in ALLOW_LIST"
        )
    excluded = EXCLUDED.get(info.name, {})
    return tuple(c for c in source if c not in info.column_names and c not in excluded)


def _converters(info: TableSpec, dialect: str) -> list[Callable[[list[Any]], pa.Array]]:
    """Per column, a function turning the driver's values into the extracted Arrow array."""
    import pyarrow as pa
    import pyarrow.compute as pc

    sqlite = dialect == "sqlite"
    stamp = pa.timestamp("us", tz="UTC")

    def uuid_(values: list[Any]) -> pa.Array:
        if sqlite:
            return pa.array(values, pa.string())
        return pa.array([None if v is None else str(v) for v in values], pa.string())

    # Sorted keys make the JSON text canonical: PostgreSQL's jsonb reorders keys and SQLite
    # keeps the writer's order; both backends yield the same text for the same document.
    def json_(values: list[Any]) -> pa.Array:
        if sqlite:
            values = [None if v is None else orjson.loads(v) for v in values]
        return pa.array([None if v is None else _canonical_json(v) for v in values], pa.string())

    def timestamp(values: list[Any]) -> pa.Array:
        if not sqlite:
            return pa.array(values, stamp)
        text = pa.array(values, pa.string())
        try:
            # The store's layout (ISO text with an explicit offset): Arrow parses it in C.
            return pc.cast(text, stamp)
        except pa.ArrowInvalid:
            return pa.array([_sqlite_timestamp(v) for v in values], stamp)

    def boolean(values: list[Any]) -> pa.Array:
        if sqlite:
            return pa.array(values, pa.int64()).cast(pa.bool_())
        return pa.array(values, pa.bool_())

    def plain(arrow_type: pa.DataType) -> Callable[[list[Any]], pa.Array]:
        return lambda values: pa.array(values, arrow_type)

    by_kind = {
        "uuid": uuid_,
        "json": json_,
        "timestamptz": timestamp,
        "bool": boolean,
        "float": plain(pa.float64()),
        "int": plain(pa.int64()),
        "text": plain(pa.string()),
    }
    return [by_kind[c.kind] for c in info.columns]


def _sqlite_timestamp(value: str | None) -> datetime | None:
    """An ISO timestamp written to SQLite by another writer; text without an offset is UTC.

    SQLite's own CURRENT_TIMESTAMP writes UTC without an offset, as does any writer that
    follows SQLite's date functions.
    """
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _canonical_json(value: Any) -> str:
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONEncodeError:
        # orjson stops at 64-bit integers; a PostgreSQL jsonb number may be larger.
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _convert(
    info: TableSpec,
    column: Column,
    convert: Callable[[list[Any]], pa.Array],
    values: list[Any],
    keys: Sequence[Any],
) -> pa.Array:
    """One column of a chunk as Arrow, or an ExtractError naming the row and value it cannot read."""
    import pyarrow as pa

    unreadable = (ValueError, TypeError, pa.ArrowException)
    try:
        return convert(values)
    except unreadable as exc:
        problem, culprit = exc, None
        for key, value in zip(keys, values, strict=True):
            try:
                convert([value])
            except unreadable as one:
                problem, culprit = one, (key, value)
                break
    where = f"{info.name}.{column.name}"
    if culprit is not None:
        shown = repr(culprit[1])
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        where += f" of {info.key} {culprit[0]}: value {shown}"
    hint = {
        "timestamptz": "an ISO timestamp such as 2026-11-28 10:00:00.000000+00:00",
        "json": "a JSON document",
        "uuid": "a UUID",
    }.get(column.kind, f"a {column.kind}")
    raise ExtractError(
        f"fleet-core {where} is not {hint} ({problem}); fix the value in the source "
        "database and extract again"
    ) from problem


def _arrow_schema(info: TableSpec) -> pa.Schema:
    import pyarrow as pa

    types = {
        "uuid": pa.string(),
        "json": pa.string(),
        "timestamptz": pa.timestamp("us", tz="UTC"),
        "bool": pa.bool_(),
        "float": pa.float64(),
        "int": pa.int64(),
        "text": pa.string(),
    }
    fields = [pa.field(c.name, types[c.kind], nullable=c.nullable) for c in info.columns]
    fields += [
        pa.field("_is_deleted", pa.bool_(), nullable=False),
        pa.field("_version", pa.uint64(), nullable=False),
        pa.field("_row_hash", pa.uint64(), nullable=False),
        pa.field("_extracted_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
    return pa.schema(fields)


def _row_hash(row: tuple[Any, ...]) -> int:
    """A 64-bit digest of a row as the driver returned it (cheap: no decoding needed).

    The same content gives the same driver values on one backend, which is all the
    "already extracted?" check needs; moving the source to another backend rewrites each
    row once.
    """
    try:
        data = orjson.dumps(row, default=str)
    except orjson.JSONEncodeError:
        # An integer beyond 64 bits (inside a PostgreSQL jsonb document): repr is stable too.
        data = repr(row).encode()
    digest = hashlib.blake2b(data, digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _read_chunks(
    connection: Connection,
    info: TableSpec,
    read_from: datetime | None,
    read_until: datetime,
    chunk_rows: int,
) -> Iterator[list[tuple[Any, ...]]]:
    """Rows changed in [read_from, read_until], oldest first, in chunks of chunk_rows."""
    # Defence in depth: the allow-list was checked at import, but specs are plain data.
    _refuse_denied(info.name, info.column_names)
    sqlite = connection.dialect.name == "sqlite"
    ref = f'"{info.name}"' if sqlite else f'{db.PG_SCHEMA}."{info.name}"'
    names = ", ".join(f'"{c}"' for c in info.column_names)
    mark = "?" if sqlite else "%s"
    if sqlite:
        # SQLite keeps timestamps as text. The store writes one layout that compares as a
        # string, but another writer may leave out the offset, use 'T' or another offset:
        # those compare on their UTC text, after an index range widened by a day (more
        # than any offset) so the index still narrows the read.
        stamp = (
            f"CASE WHEN updated_at GLOB '{_SQLITE_LAYOUT}' THEN updated_at ELSE {_SQLITE_UTC} END"
        )
        params: list[Any] = [db.timestamp_text(read_until + timedelta(days=1))]
        params.append(db.timestamp_text(read_until))
        where = f"updated_at <= {mark} AND {stamp} <= {mark}"
        if read_from is not None:
            # >= rather than >: a row committed later with exactly the watermark's timestamp
            # is caught even with overlap=0; rows already extracted are skipped by content.
            where += f" AND updated_at >= {mark} AND {stamp} >= {mark}"
            params.append(db.timestamp_text(read_from - timedelta(days=1)))
            params.append(db.timestamp_text(read_from))
    else:
        stamp = "updated_at"
        params = [read_until]
        where = f"updated_at <= {mark}"
        if read_from is not None:
            where += f" AND updated_at >= {mark}"
            params.append(read_from)
    query = f'SELECT {names} FROM {ref} WHERE {where} ORDER BY {stamp}, "{info.key}"'
    # The driver's own cursor: plain tuples, no per-row SQLAlchemy objects. On PostgreSQL a
    # named (server-side) cursor, so memory holds one chunk, not the table.
    driver = connection.connection.driver_connection
    cursor = driver.cursor() if sqlite else driver.cursor(name=f"extract_{info.name}")
    try:
        cursor.execute(query, params)
        while rows := cursor.fetchmany(chunk_rows):
            yield rows
    finally:
        cursor.close()


# --- extraction ---------------------------------------------------------------------------


def extract_table(
    engine_or_url: Engine | str,
    table: str,
    lake: Lake,
    client: Client,
    *,
    now: datetime,
    overlap: timedelta = DEFAULT_OVERLAP,
    full: bool = False,
    database: str = DATABASE,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> ExtractResult:
    """Copy rows changed since the warehouse watermark (minus `overlap`) to the lake and ClickHouse.

    Rows are read with `watermark - overlap <= updated_at <= now`, so commits that landed
    late within the overlap are caught and clock-skewed future rows wait for their time.
    Rows already in the warehouse with the same content are skipped, so re-runs and
    `full=True` backfills write nothing twice. Each chunk is written to the lake first and
    then inserted into ClickHouse, whose content alone defines the watermark: a crash in
    between is repaired by the next run.
    """
    return extract_all(
        engine_or_url,
        lake,
        client,
        now=now,
        overlap=overlap,
        full=full,
        tables=[table],
        database=database,
        chunk_rows=chunk_rows,
    )[table]


def extract_all(
    engine_or_url: Engine | str,
    lake: Lake,
    client: Client,
    *,
    now: datetime,
    overlap: timedelta = DEFAULT_OVERLAP,
    full: bool = False,
    tables: Sequence[str] | None = None,
    database: str = DATABASE,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> dict[str, ExtractResult]:
    """Extract every allow-listed table (or `tables`) as `extract_table` does; results by table.

    On PostgreSQL all tables are read in one REPEATABLE READ transaction, so the batch is
    one consistent snapshot (no trip without its vehicle); SQLite's read transaction is a
    snapshot already.
    """
    chosen = [spec(name) for name in (tables if tables is not None else SPECS)]
    _check_arguments(now, overlap, chunk_rows, database)
    names = [info.name for info in chosen]
    # A column allowed since the last run changes every row's hash: re-reading the table in
    # full rewrites each row once, now with the column filled.
    widened = set(ensure_warehouse_schema(client, names, database))
    watermarks = warehouse_watermarks(client, names, database)
    with _source(engine_or_url) as (connection, where):
        run = _Run(connection, where, lake, client, database, now, chunk_rows)
        results = {}
        for info in chosen:
            before = watermarks[info.name]
            whole = full or before is None or info.name in widened
            read_from = None if whole else before - overlap
            results[info.name] = _extract(run, info, before, read_from)
        return results


@dataclass(frozen=True)
class _Run:
    """What every table of one extraction shares."""

    connection: Connection
    where: str
    lake: Lake
    client: Client
    database: str
    now: datetime
    chunk_rows: int


def _extract(
    run: _Run, info: TableSpec, before: datetime | None, read_from: datetime | None
) -> ExtractResult:
    started = time.perf_counter()
    unlisted = _check_source(run.connection, info, run.where)
    if unlisted:
        log.warning(
            "%s: source column(s) %s are in neither ALLOW_LIST nor EXCLUDED and are not "
            "extracted; classify them in atlasmesh/fleet_core/extract.py",
            info.name,
            ", ".join(unlisted),
        )
    converters = _converters(info, run.connection.dialect.name)
    schema = _arrow_schema(info)
    target = f"`{run.database}`.`{info.name}`"
    updated_at = info.column_names.index("updated_at")
    read = written = deletes = size = 0
    files: list[str] = []
    newest = before
    for rows in _read_chunks(run.connection, info, read_from, run.now, run.chunk_rows):
        read += len(rows)
        keys = [row[0] for row in rows]
        stamps = _convert(
            info,
            info.columns[updated_at],
            converters[updated_at],
            [row[updated_at] for row in rows],
            keys,
        )
        keep, hashes = _new_rows(run.client, info, run.database, rows, before, stamps)
        if not keep:
            continue
        kept = rows if len(keep) == len(rows) else [rows[i] for i in keep]
        columns = zip(*kept, strict=True)
        kept_keys = [row[0] for row in kept]
        arrays = [
            _convert(info, column, convert, list(values), kept_keys)
            for column, convert, values in zip(info.columns, converters, columns, strict=True)
        ]
        arrow = _to_arrow(schema, info, arrays, hashes, run.now)
        arrow = _outrank_held_versions(run.client, info, run.database, arrow, before)
        last = arrow.column("updated_at")[-1].as_py()
        newest = last if newest is None or last > newest else newest
        path, nbytes = _write_lake(run.lake, info.name, arrow, run.now)
        with _warehouse_errors(run.client, f"insert into {run.database}.{info.name}"):
            run.client.insert_arrow(target, arrow)
        files.append(path)
        written += arrow.num_rows
        deletes += sum(c.true_count for c in arrow.column("_is_deleted").chunks)
        size += nbytes
    result = ExtractResult(
        table=info.name,
        rows_read=read,
        rows_written=written,
        rows_unchanged=read - written,
        deletes=deletes,
        bytes_written=size,
        files=tuple(files),
        watermark_before=before,
        watermark_after=newest,
        read_from=read_from,
        read_until=run.now,
        duration_s=time.perf_counter() - started,
        unlisted_columns=unlisted,
    )
    log.info(
        "extracted %s: %d read, %d written (%d deletes), %d unchanged, %d bytes in %.2fs",
        info.name,
        read,
        written,
        deletes,
        read - written,
        size,
        result.duration_s,
    )
    return result


def _check_arguments(now: datetime, overlap: timedelta, chunk_rows: int, database: str) -> None:
    if not isinstance(now, datetime) or now.utcoffset() is None:
        raise ExtractError(
            f"now must be a timezone-aware datetime, got {now!r}; pass datetime.now(UTC)"
        )
    if not isinstance(overlap, timedelta) or overlap < timedelta(0):
        raise ExtractError(f"overlap must be a timedelta >= 0, got {overlap!r}")
    if not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ExtractError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
    if not _IDENTIFIER.match(database):
        raise ExtractError(
            f"warehouse database name {database!r} must be letters, digits and '_' "
            "(e.g. fleet_core)"
        )


@contextmanager
def _source(engine_or_url: Engine | str) -> Iterator[tuple[Connection, str]]:
    """A connection to the source and its printable URL; connection failures made clear."""
    owned = isinstance(engine_or_url, str)
    engine = db.make_engine(engine_or_url) if isinstance(engine_or_url, str) else engine_or_url
    where = engine.url.render_as_string(hide_password=True)
    try:
        connection = db.open_connection(engine, where, ExtractError)
        if connection.dialect.name == "postgresql":
            connection = connection.execution_options(isolation_level="REPEATABLE READ")
        with connection, connection.begin():
            yield connection, where
    finally:
        if owned:
            engine.dispose()


def _new_rows(
    client: Client,
    info: TableSpec,
    database: str,
    rows: list[tuple[Any, ...]],
    watermark: datetime | None,
    updated: pa.Array,
) -> tuple[list[int], list[int]]:
    """Indexes and hashes of the chunk's rows that the warehouse does not hold yet."""
    hashes = [_row_hash(row) for row in rows]
    keep = list(range(len(rows)))
    first, last = updated[0].as_py(), updated[-1].as_py()
    # Only rows at or below the watermark can already be in the warehouse; a hash covers
    # updated_at, so a same-content copy has the same updated_at and lies in this range.
    if watermark is not None and first <= watermark:
        known = _known_versions(client, info, database, first, min(last, watermark))
        # ClickHouse prints UUIDs in lower case; a source may hold them in upper case.
        keep = [i for i in keep if (str(rows[i][0]).lower(), hashes[i]) not in known]
    return keep, [hashes[i] for i in keep]


def _to_arrow(
    schema: pa.Schema,
    info: TableSpec,
    arrays: list[pa.Array],
    hashes: list[int],
    now: datetime,
) -> pa.Table:
    import pyarrow as pa
    import pyarrow.compute as pc

    names = info.column_names
    if info.soft_delete:
        deleted = pc.is_valid(arrays[names.index("deleted_at")])
    else:
        deleted = pa.array([False] * len(hashes), pa.bool_())
    version = pc.cast(pc.cast(arrays[names.index("updated_at")], pa.int64()), pa.uint64())
    arrays = [
        *arrays,
        deleted,
        version,
        pa.array(hashes, pa.uint64()),
        pa.array([now] * len(hashes), pa.timestamp("us", tz="UTC")),
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def _outrank_held_versions(
    client: Client, info: TableSpec, database: str, arrow: pa.Table, watermark: datetime | None
) -> pa.Table:
    """The batch with each version raised above the one the warehouse holds for its key.

    A source row whose updated_at moved backwards (a writer's clock behind another's) is
    still the row's newest state; with `_version` from updated_at alone, ReplacingMergeTree
    and lake readers would keep the older copy. Only rows at or below the watermark can be
    outranked, so a run of new rows costs no lookup.
    """
    import pyarrow as pa

    versions = arrow.column("_version").to_pylist()
    keys = [str(k).lower() for k in arrow.column(0).to_pylist()]
    limit = None if watermark is None else _micros(watermark)
    suspects = sorted(
        {k for k, v in zip(keys, versions, strict=True) if limit is not None and v <= limit}
    )
    if not suspects:
        return arrow
    with _warehouse_errors(client, f"look up held versions of {database}.{info.name}"):
        held = dict(
            client.query(
                f"SELECT toString(`{info.key}`), max(_version) FROM `{database}`.`{info.name}` "
                f"WHERE `{info.key}` IN {{keys:Array(UUID)}} GROUP BY `{info.key}`",
                parameters={"keys": suspects},
            ).result_rows
        )
    raised = [max(v, int(held.get(k, -1)) + 1) for k, v in zip(keys, versions, strict=True)]
    if raised == versions:
        return arrow
    index = arrow.schema.get_field_index("_version")
    return arrow.set_column(index, arrow.schema.field(index), pa.array(raised, pa.uint64()))


def _write_lake(lake: Lake, table: str, arrow: pa.Table, now: datetime) -> tuple[str, int]:
    """Write one batch as Parquet; its name derives from its rows, so a repeat overwrites it."""
    import pyarrow.parquet as pq

    _refuse_denied(f"lake batch of {table}", arrow.column_names)
    keys = arrow.column(0).to_pylist()
    hashes = arrow.column("_row_hash").to_pylist()
    digest = hashlib.sha256()
    for key, row_hash in zip(keys, hashes, strict=True):
        digest.update(f"{key}:{row_hash}\n".encode())
    day = now.astimezone(UTC).date().isoformat()
    path = f"{LAKE_PREFIX}/{table}/extract_date={day}/part-{digest.hexdigest()[:20]}.parquet"
    buffer = io.BytesIO()
    pq.write_table(arrow, buffer, compression="zstd")
    data = buffer.getvalue()
    lake.write_bytes(path, data)
    return path, len(data)
