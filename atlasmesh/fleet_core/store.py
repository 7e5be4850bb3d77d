"""Batched writes and simple reads of fleet-core tables, identical on SQLite and PostgreSQL."""

from __future__ import annotations

import gc
import math
import numbers
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from graphlib import TopologicalSorter
from operator import attrgetter, itemgetter
from types import TracebackType
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from atlasmesh.fleet_core import db
from atlasmesh.fleet_core.db import FleetCoreError

# Catalog type names -> value kind. SQLite names are the ones db._TYPES declares.
_PG_KINDS = {
    "uuid": "uuid",
    "jsonb": "json",
    "json": "json",
    "timestamp with time zone": "timestamptz",
    "boolean": "bool",
    "double precision": "float",
    "real": "float",
    "numeric": "float",
    "integer": "int",
    "bigint": "int",
    "smallint": "int",
}
_SQLITE_KINDS = {
    "UUID_TEXT": "uuid",
    "JSON_TEXT": "json",
    "TIMESTAMPTZ_TEXT": "timestamptz",
    "BOOLEAN": "bool",
    "REAL": "float",
    "INTEGER": "int",
}
_SQLITE_LENGTH = re.compile(r"CHAR\s*\(\s*(\d+)\s*\)", re.IGNORECASE)
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_STAMPS = ("created_at", "updated_at")
_IDS_PER_STATEMENT = 1000


class ConstraintViolation(FleetCoreError):
    """The database refused rows: foreign key, uniqueness, NOT NULL or CHECK constraint."""


class _BadValue(Exception):
    """A value that does not fit its column; the caller adds table, column and row."""

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


@dataclass(frozen=True)
class Column:
    """A column as the catalog describes it."""

    name: str
    kind: str  # uuid | json | timestamptz | bool | float | int | text
    max_length: int | None = None


@dataclass(frozen=True)
class Table:
    """A table as the catalog describes it."""

    name: str
    columns: dict[str, Column]
    primary_key: tuple[str, ...]
    parents: frozenset[str] = field(default_factory=frozenset)

    @property
    def soft_delete(self) -> bool:
        """True when rows are deleted by setting deleted_at rather than removed."""
        return "deleted_at" in self.columns


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while a batch is built: it allocates no cycles, and with 100k
    rows alive the collector's repeated full scans cost more than the work itself."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _quote(name: str) -> str:
    return f'"{name}"'


class FleetCoreStore:
    """Writer and reader of the fleet-core tables (the simulator's sink, tests' oracle).

    Construction applies pending migrations unless `migrate=False`, so a fresh
    `$ATLASMESH_HOME` works without a separate step.
    """

    def __init__(self, url: str, *, migrate: bool = True) -> None:
        if migrate:
            db.migrate(url)
        self.url = url
        self._engine = db.make_engine(url)
        self._dialect = self._engine.dialect.name
        with self._connect() as connection:
            self._tables = _load_catalog(connection)
        if not self._tables:
            raise FleetCoreError(
                f"the fleet-core database {db.mask_url(url)} has no tables; "
                "run `atlasmesh fleet-core migrate` first"
            )
        self._order = list(
            TopologicalSorter(
                {name: self._tables[name].parents - {name} for name in sorted(self._tables)}
            ).static_order()
        )

    def close(self) -> None:
        """Release pooled connections."""
        self._engine.dispose()

    def __enter__(self) -> FleetCoreStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def tables(self) -> list[str]:
        """Table names, parents before children (the order to load and the reverse to clear)."""
        return list(self._order)

    def columns(self, table: str) -> list[str]:
        """Column names of a table in their declared order."""
        return list(self._table(table).columns)

    def upsert(self, table: str, rows: Iterable[Mapping[str, Any]]) -> int:
        """Insert rows or update them by primary key in one transaction; return rows written.

        Each row's keys are columns of the table; absent columns keep their current value
        (or default, on insert). `created_at` and `updated_at` default to now (UTC);
        `updated_at` moves only when a column actually changes, so rewriting identical
        rows writes nothing and extraction by `updated_at` carries only real changes.
        JSON columns take dicts/lists (serialised) or JSON text; timestamps must be
        timezone-aware datetimes. If a key appears twice, the last row wins.
        """
        return self.upsert_many({table: rows})[table]

    def upsert_many(
        self, rows_by_table: Mapping[str, Iterable[Mapping[str, Any]]]
    ) -> dict[str, int]:
        """Upsert several tables (parents first) in one transaction: all of them or none."""
        now = datetime.now(UTC)
        with _gc_paused():
            work = []
            for table, rows in rows_by_table.items():
                info = self._table(table)
                groups = self._group(info, rows)
                batches = [
                    self._encode_rows(info, columns, group, now)
                    for columns, group in groups.items()
                ]
                work.append((table, info, batches))
            written = dict.fromkeys(rows_by_table, 0)
            if not any(batches for _, _, batches in work):
                return written
            with self._connect(write=True) as connection:
                stages = 0
                for table, info, batches in work:
                    for columns, params in batches:
                        stage = f"_fc_stage_{stages}"
                        stages += 1
                        written[table] += self._merge(connection, info, columns, params, stage)
        return written

    def soft_delete(self, table: str, ids: Iterable[Any], at: datetime) -> int:
        """Mark rows deleted at `at` (they stay, with updated_at bumped); return rows marked.

        Rows already deleted keep their original deleted_at.
        """
        info = self._table(table)
        if not info.soft_delete:
            soft = [t for t in self._order if self._tables[t].soft_delete]
            raise FleetCoreError(
                f"table {table!r} has no soft delete (its rows are a log or follow a status "
                f"lifecycle); tables with deleted_at: {', '.join(soft)}"
            )
        (key,) = info.primary_key
        stamp = self._encode_value(info, "deleted_at", at, "at")
        encode = _encoder(info.columns[key], self._dialect)
        keys = [
            self._check(encode, value, table, key, position) for position, value in enumerate(ids)
        ]
        statement = sa.text(
            f"UPDATE {self._ref(table)} SET deleted_at = :at, "
            # updated_at never moves backwards, or an extraction watermark would skip it.
            "updated_at = CASE WHEN updated_at > :at THEN updated_at ELSE :at END "
            f"WHERE {_quote(key)} IN :ids AND deleted_at IS NULL"
        ).bindparams(sa.bindparam("ids", expanding=True))
        marked = 0
        with self._connect(write=True) as connection:
            for start in range(0, len(keys), _IDS_PER_STATEMENT):
                chunk = keys[start : start + _IDS_PER_STATEMENT]
                marked += connection.execute(statement, {"at": stamp, "ids": chunk}).rowcount
        return marked

    def read(self, table: str, where: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """All rows of a table (soft-deleted included) matching column = value filters.

        Values come back as Python types: dicts/lists, UTC datetimes, bools, str ids.
        """
        info = self._table(table)
        self._check_columns(info, where or {})
        clauses: list[str] = []
        params: dict[str, Any] = {}
        for position, (name, value) in enumerate((where or {}).items()):
            if value is None:
                clauses.append(f"{_quote(name)} IS NULL")
            else:
                params[f"p{position}"] = self._encode_value(info, name, value, "where")
                clauses.append(f"{_quote(name)} = :p{position}")
        names = list(info.columns)
        query = f"SELECT {', '.join(map(_quote, names))} FROM {self._ref(table)}"
        if clauses:
            query += " WHERE " + " AND ".join(clauses)
        query += " ORDER BY " + ", ".join(map(_quote, info.primary_key))
        decoders = [_decoder(info.columns[name], self._dialect) for name in names]
        with self._connect() as connection:
            rows = connection.execute(sa.text(query), params).all()
        return [
            {name: decode(value) for name, decode, value in zip(names, decoders, row, strict=True)}
            for row in rows
        ]

    def row_counts(self) -> dict[str, int]:
        """Rows per table, soft-deleted rows included."""
        with self._connect() as connection:
            return {
                table: connection.exec_driver_sql(
                    f"SELECT count(*) FROM {self._ref(table)}"
                ).scalar_one()
                for table in self._order
            }

    def truncate_all(self) -> None:
        """Remove every row of every table (for a re-simulation); the schema stays."""
        with self._connect(write=True) as connection:
            if self._dialect == "postgresql":
                refs = ", ".join(self._ref(t) for t in self._order)
                connection.exec_driver_sql(f"TRUNCATE {refs}")
            else:
                for table in reversed(self._order):
                    connection.exec_driver_sql(f"DELETE FROM {self._ref(table)}")

    def _connect(self, *, write: bool = False) -> _Transaction:
        connection = self._engine.connect()
        if write:
            connection = connection.execution_options(sqlite_begin="IMMEDIATE")
        return _Transaction(connection)

    def _ref(self, table: str) -> str:
        if self._dialect == "postgresql":
            return f"{db.PG_SCHEMA}.{_quote(table)}"
        return _quote(table)

    def _table(self, table: str) -> Table:
        info = self._tables.get(table)
        if info is None:
            raise FleetCoreError(
                f"unknown fleet-core table {table!r}; tables are: {', '.join(self._order)}"
            )
        return info

    def _check_columns(self, info: Table, names: Iterable[str]) -> None:
        unknown = [name for name in names if name not in info.columns]
        if unknown:
            raise FleetCoreError(
                f"unknown column(s) {', '.join(map(repr, unknown))} for table {info.name!r}; "
                f"its columns are: {', '.join(info.columns)} (see docs/fleet_core_schema.md)"
            )

    def _group(
        self, info: Table, rows: Iterable[Mapping[str, Any]]
    ) -> dict[tuple[str, ...], list[tuple[int, Mapping[str, Any]]]]:
        """Rows deduplicated by primary key, grouped by their set of columns."""
        latest: dict[Any, tuple[int, Mapping[str, Any]]] = {}
        key_of = itemgetter(*info.primary_key)
        for position, row in enumerate(rows):
            if type(row) is not dict and not isinstance(row, Mapping):
                raise FleetCoreError(
                    f"row {position} for table {info.name!r} is a {type(row).__name__}, "
                    "not a mapping of column to value"
                )
            try:
                key = key_of(row)
            except KeyError:
                raise FleetCoreError(
                    f"row {position} for table {info.name!r} lacks its primary key "
                    f"{', '.join(info.primary_key)}"
                ) from None
            try:
                latest[key] = (position, row)
            except TypeError:
                raise FleetCoreError(
                    f"row {position} for table {info.name!r}: primary key {key!r} is not a "
                    "plain value"
                ) from None
        groups: dict[tuple[str, ...], list[tuple[int, Mapping[str, Any]]]] = {}
        for position, row in latest.values():
            columns = tuple(row)
            if columns not in groups:
                self._check_columns(info, columns)
            groups.setdefault(columns, []).append((position, row))
        return groups

    def _encode_rows(
        self,
        info: Table,
        columns: tuple[str, ...],
        group: list[tuple[int, Mapping[str, Any]]],
        now: datetime,
    ) -> tuple[tuple[str, ...], list[tuple[Any, ...]]]:
        """The group's columns (plus defaulted stamps) and its rows as driver-ready tuples."""
        stamps = tuple(c for c in _STAMPS if c not in columns)
        encoded: list[list[Any]] = []
        for name in columns:
            values = [row[name] for _, row in group]
            try:
                encoded.append(_encode_column(info.columns[name], self._dialect, values))
            except _BadValue as exc:
                position = group[exc.index][0] if exc.index is not None else "?"
                raise FleetCoreError(f"{info.name}.{name}, row {position}: {exc}") from None
        for name in stamps:
            encoded.append([self._encode_value(info, name, now, "now")] * len(group))
        return (*columns, *stamps), list(zip(*encoded, strict=True))

    def _encode_value(self, info: Table, name: str, value: Any, where: str) -> Any:
        return self._check(
            _encoder(info.columns[name], self._dialect), value, info.name, name, where
        )

    @staticmethod
    def _check(
        encode: Callable[[Any], Any], value: Any, table: str, column: str, where: int | str
    ) -> Any:
        try:
            return encode(value)
        except _BadValue as exc:
            place = f"row {where}" if isinstance(where, int) else f"argument {where!r}"
            raise FleetCoreError(f"{table}.{column}, {place}: {exc}") from None

    def _merge(
        self,
        connection: Connection,
        info: Table,
        columns: Sequence[str],
        params: list[tuple[Any, ...]],
        stage: str,
    ) -> int:
        """Load rows into a staging table, then update existing rows and insert new ones.

        Set-based statements from a stage: per-row INSERT ... ON CONFLICT is 3-4x slower
        on SQLite (foreign-key bookkeeping per execution) and COPY beats executemany 1.5x
        on PostgreSQL. Update and insert are separate statements because an INSERT checks
        NOT NULL before it sees the conflict, which would refuse partial rows for existing
        keys.
        """
        target = self._ref(info.name)
        names = ", ".join(map(_quote, columns))
        keys = info.primary_key
        data = [c for c in columns if c not in keys and c not in _STAMPS]
        distinct = "IS NOT" if self._dialect == "sqlite" else "IS DISTINCT FROM"
        changed = ", ".join(f"{_quote(c)} = {{new}}.{_quote(c)}" for c in (*data, "updated_at"))
        differs = f"({_columns(data, 'cur')}) {distinct} ({{new_columns}})"
        statements: list[str] = []
        on_conflict = "DO NOTHING"
        if data:
            statements.append(
                f"UPDATE {target} AS cur SET {changed.format(new='s')} FROM {stage} AS s "
                f"WHERE {_join(keys, 'cur', 's')} "
                f"AND {differs.format(new_columns=_columns(data, 's'))}"
            )
            # Covers a concurrent writer inserting the same key between the two statements.
            on_conflict = (
                f"DO UPDATE SET {changed.format(new='excluded')} "
                f"WHERE {differs.format(new_columns=_columns(data, 'excluded'))}"
            )
        statements.append(
            f"INSERT INTO {target} AS cur ({names}) SELECT {names} FROM {stage} AS s "
            f"WHERE NOT EXISTS (SELECT 1 FROM {target} AS old WHERE {_join(keys, 'old', 's')}) "
            f"ON CONFLICT ({', '.join(map(_quote, keys))}) {on_conflict}"
        )
        create = f"CREATE TEMP TABLE {stage} AS SELECT {names} FROM {target} WHERE false"
        written = 0
        if self._dialect == "sqlite":
            try:
                connection.exec_driver_sql(create)
                marks = ", ".join("?" for _ in columns)
                connection.exec_driver_sql(f"INSERT INTO {stage} VALUES ({marks})", params)
                for statement in statements:
                    written += connection.exec_driver_sql(statement).rowcount
                connection.exec_driver_sql(f"DROP TABLE {stage}")
            except sa.exc.DBAPIError as exc:
                integrity = isinstance(exc, sa.exc.IntegrityError)
                raise _database_error(info.name, exc.orig, integrity) from exc
            return written
        import psycopg

        try:
            with connection.connection.driver_connection.cursor() as cursor:
                cursor.execute(create)
                with cursor.copy(f"COPY {stage} ({names}) FROM STDIN") as copy:
                    for row in params:
                        copy.write_row(row)
                for statement in statements:
                    cursor.execute(statement)
                    written += cursor.rowcount
                cursor.execute(f"DROP TABLE {stage}")
        except psycopg.Error as exc:
            raise _database_error(info.name, exc, isinstance(exc, psycopg.IntegrityError)) from exc
        return written


def _columns(names: Iterable[str], alias: str) -> str:
    return ", ".join(f"{alias}.{_quote(name)}" for name in names)


def _join(keys: Iterable[str], left: str, right: str) -> str:
    return " AND ".join(f"{left}.{_quote(k)} = {right}.{_quote(k)}" for k in keys)


class _Transaction:
    """A connection in a transaction: committed on success, rolled back on error."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def __enter__(self) -> Connection:
        self._transaction = self._connection.begin()
        return self._connection

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                self._transaction.commit()
            else:
                self._transaction.rollback()
        finally:
            self._connection.close()


def _database_error(table: str, error: BaseException | None, integrity: bool) -> FleetCoreError:
    message = " ".join(line.strip() for line in str(error).strip().splitlines() if line.strip())
    if integrity:
        return ConstraintViolation(
            f"{table}: the database refused the rows: {message}. Load parent rows first "
            "and keep values within the constraints of docs/fleet_core_schema.md"
        )
    return FleetCoreError(f"{table}: the database refused the rows: {message}")


def _load_catalog(connection: Connection) -> dict[str, Table]:
    if connection.dialect.name == "sqlite":
        return _sqlite_catalog(connection)
    return _postgres_catalog(connection)


def _sqlite_catalog(connection: Connection) -> dict[str, Table]:
    names = connection.exec_driver_sql(
        "SELECT name FROM sqlite_master WHERE type = 'table' "
        "AND name NOT LIKE 'sqlite_%' AND name <> :skip",
        {"skip": db.MIGRATIONS_TABLE},
    ).scalars()
    tables: dict[str, Table] = {}
    for name in names:
        columns: dict[str, Column] = {}
        primary: list[tuple[int, str]] = []
        for _cid, column, declared, _notnull, _default, pk in connection.exec_driver_sql(
            f"PRAGMA table_info({_quote(name)})"
        ):
            declared = (declared or "").upper()
            length = _SQLITE_LENGTH.search(declared)
            columns[column] = Column(
                column,
                _SQLITE_KINDS.get(declared, "text"),
                int(length.group(1)) if length else None,
            )
            if pk:
                primary.append((pk, column))
        parents = frozenset(
            row[2] for row in connection.exec_driver_sql(f"PRAGMA foreign_key_list({_quote(name)})")
        )
        tables[name] = Table(name, columns, tuple(c for _, c in sorted(primary)), parents)
    return tables


def _postgres_catalog(connection: Connection) -> dict[str, Table]:
    schema = {"schema": db.PG_SCHEMA, "skip": db.MIGRATIONS_TABLE}
    columns: dict[str, dict[str, Column]] = {}
    for table, column, data_type, length in connection.execute(
        sa.text(
            "SELECT table_name, column_name, data_type, character_maximum_length "
            "FROM information_schema.columns WHERE table_schema = :schema "
            "AND table_name <> :skip ORDER BY table_name, ordinal_position"
        ),
        schema,
    ):
        columns.setdefault(table, {})[column] = Column(
            column, _PG_KINDS.get(data_type, "text"), length
        )
    primary: dict[str, list[str]] = {}
    for table, column in connection.execute(
        sa.text(
            "SELECT tc.table_name, kcu.column_name FROM information_schema.table_constraints tc "
            "JOIN information_schema.key_column_usage kcu "
            "ON kcu.constraint_schema = tc.constraint_schema "
            "AND kcu.constraint_name = tc.constraint_name "
            "WHERE tc.constraint_type = 'PRIMARY KEY' AND tc.table_schema = :schema "
            "ORDER BY tc.table_name, kcu.ordinal_position"
        ),
        {"schema": db.PG_SCHEMA},
    ):
        primary.setdefault(table, []).append(column)
    parents: dict[str, set[str]] = {}
    for child, parent in connection.execute(
        sa.text(
            "SELECT child.relname, parent.relname FROM pg_constraint c "
            "JOIN pg_class child ON child.oid = c.conrelid "
            "JOIN pg_class parent ON parent.oid = c.confrelid "
            "JOIN pg_namespace n ON n.oid = child.relnamespace "
            "WHERE c.contype = 'f' AND n.nspname = :schema"
        ),
        {"schema": db.PG_SCHEMA},
    ):
        parents.setdefault(child, set()).add(parent)
    return {
        table: Table(table, cols, tuple(primary.get(table, ())), frozenset(parents.get(table, ())))
        for table, cols in columns.items()
    }


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'…' if len(text) > 60 else ''}"


def _encoder(column: Column, dialect: str) -> Callable[[Any], Any]:
    """A function turning a Python value into what the driver stores, or raising _BadValue."""
    kind = column.kind
    if kind == "uuid":

        def encode_uuid(value: Any) -> Any:
            if value is None:
                return None
            if type(value) is str and _CANONICAL_UUID.fullmatch(value):
                return value
            if isinstance(value, uuid.UUID):
                return str(value)
            try:
                return str(uuid.UUID(value))
            except (TypeError, ValueError, AttributeError):
                raise _BadValue(f"expected a UUID, got {_describe(value)}") from None

        return encode_uuid
    if kind == "json":

        def encode_json(value: Any) -> Any:
            if value is None:
                return None
            if isinstance(value, str):
                try:
                    orjson.loads(value)
                except orjson.JSONDecodeError:
                    raise _BadValue(
                        f"a str for a JSON column must be JSON text; got {_describe(value)} "
                        "(pass dicts/lists to have them serialised)"
                    ) from None
                return value
            try:
                return orjson.dumps(value).decode()
            except TypeError as exc:
                raise _BadValue(f"cannot serialise {_describe(value)} as JSON: {exc}") from None

        return encode_json
    if kind == "timestamptz":

        def encode_timestamp(value: Any) -> Any:
            if value is None:
                return None
            if not isinstance(value, datetime) or value.utcoffset() is None:
                raise _BadValue(
                    f"expected a timezone-aware datetime (UTC), got {_describe(value)}; "
                    "use datetime.now(UTC) or dt.replace(tzinfo=UTC)"
                )
            return db.timestamp_text(value) if dialect == "sqlite" else value

        return encode_timestamp
    if kind == "bool":

        def encode_bool(value: Any) -> Any:
            if value is None or isinstance(value, bool):
                return value
            raise _BadValue(f"expected a bool, got {_describe(value)}")

        return encode_bool
    if kind == "float":

        def encode_float(value: Any) -> Any:
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise _BadValue(f"expected a number, got {_describe(value)}")
            number = float(value)
            if not math.isfinite(number):
                raise _BadValue(f"expected a finite number, got {number}")
            return number

        return encode_float
    if kind == "int":

        def encode_int(value: Any) -> Any:
            if value is None or (type(value) is int):
                return value
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise _BadValue(f"expected an integer, got {_describe(value)}")
            return int(value)

        return encode_int
    limit = column.max_length

    def encode_text(value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, str):
            raise _BadValue(f"expected a str, got {_describe(value)}")
        if limit is not None and len(value) > limit:
            raise _BadValue(f"text of {len(value)} characters exceeds the column's {limit}")
        if "\x00" in value:
            # PostgreSQL cannot store NUL in text; refuse it on SQLite too so both agree.
            raise _BadValue("text contains a NUL character")
        return value

    return encode_text


def _encode_column(column: Column, dialect: str, values: list[Any]) -> list[Any]:
    """Encode one column of a batch: C-speed checks for the common types, else value by value."""
    fast = _FAST_PATHS[column.kind](column, dialect, values)
    if fast is not None:
        return fast
    encode = _encoder(column, dialect)
    encoded = []
    for index, value in enumerate(values):
        try:
            encoded.append(encode(value))
        except _BadValue as exc:
            raise _BadValue(str(exc), index) from None
    return encoded


def _present(values: list[Any], types: set[type]) -> list[Any]:
    return [v for v in values if v is not None] if type(None) in types else values


def _fast_text(column: Column, _dialect: str, values: list[Any]) -> list[Any] | None:
    types = set(map(type, values))
    if not types <= {str, type(None)}:
        return None
    present = _present(values, types)
    if column.max_length is not None and present and max(map(len, present)) > column.max_length:
        return None
    return None if "\x00" in "".join(present) else values


def _fast_uuid(_column: Column, _dialect: str, values: list[Any]) -> list[Any] | None:
    types = set(map(type, values))
    if types <= {str, type(None)} and all(map(_CANONICAL_UUID.fullmatch, _present(values, types))):
        return values
    return None


def _fast_number(column: Column, _dialect: str, values: list[Any]) -> list[Any] | None:
    types = set(map(type, values))
    allowed = {float, int, type(None)} if column.kind == "float" else {int, type(None)}
    if types <= allowed and all(map(math.isfinite, _present(values, types))):
        return values
    return None


def _fast_bool(_column: Column, _dialect: str, values: list[Any]) -> list[Any] | None:
    return values if set(map(type, values)) <= {bool, type(None)} else None


def _fast_timestamp(_column: Column, dialect: str, values: list[Any]) -> list[Any] | None:
    types = set(map(type, values))
    if not types <= {datetime, type(None)}:
        return None
    present = _present(values, types)
    if not set(map(attrgetter("tzinfo"), present)) <= {UTC}:
        return None
    if dialect != "sqlite":
        return values
    return [None if v is None else v.isoformat(" ", "microseconds") for v in values]


def _fast_json(_column: Column, _dialect: str, values: list[Any]) -> list[Any] | None:
    types = set(map(type, values))
    if not types <= {dict, list, type(None)}:
        return None
    try:
        if type(None) in types:
            return [None if v is None else orjson.dumps(v).decode() for v in values]
        return [encoded.decode() for encoded in map(orjson.dumps, values)]
    except TypeError:
        return None


_FAST_PATHS: dict[str, Callable[[Column, str, list[Any]], list[Any] | None]] = {
    "text": _fast_text,
    "uuid": _fast_uuid,
    "float": _fast_number,
    "int": _fast_number,
    "bool": _fast_bool,
    "timestamptz": _fast_timestamp,
    "json": _fast_json,
}


def _decoder(column: Column, dialect: str) -> Callable[[Any], Any]:
    """A function turning what the driver returns into the documented Python type."""
    kind = column.kind

    def identity(value: Any) -> Any:
        return value

    if kind == "uuid":
        return lambda value: None if value is None else str(value)
    if kind == "timestamptz":
        if dialect == "sqlite":
            return lambda value: None if value is None else datetime.fromisoformat(value)
        return lambda value: None if value is None else value.astimezone(UTC)
    if kind == "json" and dialect == "sqlite":
        return lambda value: None if value is None else orjson.loads(value)
    if kind == "bool" and dialect == "sqlite":
        return lambda value: None if value is None else bool(value)
    return identity
