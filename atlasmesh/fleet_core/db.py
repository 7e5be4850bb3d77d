"""Connections to the fleet-core database and its versioned, checksummed migrations."""

from __future__ import annotations

import hashlib
import itertools
import re
import sqlite3
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine

PG_SCHEMA = "fleet_core"
MIGRATIONS_DIR = Path(__file__).with_name("migrations")
MIGRATIONS_TABLE = "schema_migrations"

# Placeholders a migration may use so one file serves both backends. SQLite declared types
# keep TEXT affinity (so JSON like '1' is never coerced to a number) while naming the kind,
# which the store reads back from the catalog.
_TYPES = {
    "postgresql": {
        "uuid": "UUID",
        "json": "JSONB",
        "timestamptz": "TIMESTAMP WITH TIME ZONE",
        "bool": "BOOLEAN",
        "float": "DOUBLE PRECISION",
        "now": "now()",
    },
    "sqlite": {
        "uuid": "UUID_TEXT",
        "json": "JSON_TEXT",
        "timestamptz": "TIMESTAMPTZ_TEXT",
        "bool": "BOOLEAN",
        "float": "REAL",
        # Same text layout as the store writes (microseconds, explicit UTC offset), so
        # values from defaults and from the store compare correctly as strings.
        "now": "(strftime('%Y-%m-%d %H:%M:%f000+00:00', 'now'))",
    },
}
_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")
_FILENAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_VERSION_LINE = re.compile(r"^--\s*version:\s*(\S+)\s*$", re.MULTILINE)
_SEMVER = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")
# A fixed key so concurrent `migrate` calls on one PostgreSQL database serialise.
_PG_LOCK_KEY = zlib.crc32(b"atlasmesh.fleet_core.migrate")


class FleetCoreError(Exception):
    """A fleet-core operation failed because of its input, its database or its schema."""


class MigrationError(FleetCoreError):
    """The migrations on disk and the ones recorded in the database disagree, or one failed."""


@dataclass(frozen=True)
class Migration:
    """One numbered migration file: its semantic version, SQL template and checksum."""

    number: int
    name: str
    version: str
    sql: str
    checksum: str
    path: Path

    @property
    def filename(self) -> str:
        """The file's name, as shown in errors and status."""
        return self.path.name


def timestamp_text(value: datetime) -> str:
    """The one SQLite text layout of a timestamp: UTC, microseconds, explicit offset."""
    return value.astimezone(UTC).isoformat(sep=" ", timespec="microseconds")


def mask_url(url: str) -> str:
    """The URL with any password replaced by ***, safe for logs and status output."""
    try:
        parsed = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError):  # ValueError: a port that is not a number
        return "<unparseable URL>"
    if "password" in parsed.query:
        parsed = parsed.update_query_dict({"password": "***"})
    return parsed.render_as_string(hide_password=True)


def _normalise_url(url: str) -> URL:
    try:
        parsed = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError) as exc:
        # The value is not echoed: a malformed DSN may still hold a password.
        raise FleetCoreError(
            "the fleet-core DSN is not a URL; set ATLASMESH_FLEET_CORE_DSN to "
            "sqlite:///path/to/file.db or postgresql://user@host:5432/dbname"
        ) from exc
    backend, _, driver = parsed.drivername.partition("+")
    if backend in ("postgresql", "postgres"):
        if driver not in ("", "psycopg"):
            raise FleetCoreError(
                f"fleet-core DSN {mask_url(url)} asks for driver {driver!r}; only psycopg "
                "(version 3) is installed: use postgresql://… or postgresql+psycopg://…"
            )
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        if (parsed.database or "") in ("", ":memory:"):
            # Every connection would get its own empty database: a migration would vanish.
            raise FleetCoreError(
                f"fleet-core DSN {mask_url(url)} is an in-memory SQLite database, which "
                "keeps nothing; give a file: sqlite:///path/to/file.db"
            )
        return parsed
    raise FleetCoreError(
        f"fleet-core DSN {mask_url(url)} uses {backend!r}; supported are sqlite:///… "
        "and postgresql://…"
    )


def _sqlite_file(url: URL) -> Path | None:
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return Path(database)


def make_engine(url: str) -> Engine:
    """A SQLAlchemy engine for the fleet-core DSN, configured identically for every caller.

    SQLite: foreign keys on, WAL, transactional DDL. PostgreSQL: psycopg 3, UTC session,
    `search_path` = fleet_core so unqualified table names mean the same on both backends.
    """
    parsed = _normalise_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = _sqlite_file(parsed)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(parsed)
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    options = f"-c search_path={PG_SCHEMA},public -c timezone=UTC"
    if "options" in parsed.query:
        options = f"{parsed.query['options']} {options}"
        parsed = parsed.difference_update_query(["options"])
    return sa.create_engine(
        parsed,
        connect_args={"options": options, "application_name": "atlasmesh-fleet-core"},
    )


def _sqlite_on_connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
    # Python's sqlite3 would otherwise commit silently before DDL, making a migration
    # non-atomic; SQLAlchemy's `begin` event below issues BEGIN instead.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.execute("PRAGMA busy_timeout = 30000")
    # WAL lets the extractor read while the simulator writes.
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = NORMAL")
    # Upserts stage rows in a temp table; keep it off disk.
    cursor.execute("PRAGMA temp_store = MEMORY")
    cursor.close()


def _sqlite_on_begin(connection: Connection) -> None:
    # Writers ask for IMMEDIATE so two writers queue on busy_timeout instead of one
    # failing with "database is locked" when upgrading a read lock.
    mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
    connection.exec_driver_sql(f"BEGIN {mode}")


def open_connection(
    engine: Engine, where: str, error: type[FleetCoreError] = FleetCoreError
) -> Connection:
    """Connect, turning "server down or DSN wrong" into one clear `error` naming `where`."""
    try:
        return engine.connect()
    except sa.exc.OperationalError as exc:
        raise error(
            f"cannot connect to the fleet-core database {where}: "
            f"{str(exc.orig).strip().splitlines()[0]}; check ATLASMESH_FLEET_CORE_DSN "
            "and that the server is running"
        ) from exc


@contextmanager
def connect(url: str) -> Iterator[Connection]:
    """A connection whose database errors surface as FleetCoreError with a masked URL."""
    engine = make_engine(url)
    try:
        connection = open_connection(engine, mask_url(url))
        with connection:
            try:
                yield connection
            except sa.exc.DBAPIError as exc:
                raise FleetCoreError(
                    f"the fleet-core database {mask_url(url)} refused an operation: "
                    f"{str(exc.orig).strip().splitlines()[0]}"
                ) from exc
    finally:
        engine.dispose()


def render(sql: str, dialect: str) -> str:
    """The migration template with its {{placeholders}} replaced for one backend."""
    types = _TYPES[dialect]

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in types:
            raise MigrationError(
                f"unknown placeholder {{{{{name}}}}}; known: {', '.join(sorted(types))}"
            )
        return types[name]

    return _PLACEHOLDER.sub(substitute, sql)


def split_statements(sql: str, dialect: str) -> list[str]:
    """Split SQL on top-level semicolons, respecting quotes, comments and $$ bodies.

    SQLite trigger bodies (BEGIN … END with inner semicolons) are kept whole by asking
    SQLite itself whether the statement so far is complete.
    """
    pieces: list[str] = []
    start = i = 0
    n = len(sql)
    while i < n:
        ch = sql[i]
        if ch in ("'", '"'):
            end = sql.find(ch, i + 1)
            # A doubled quote is an escaped quote: keep scanning after it.
            while end != -1 and end + 1 < n and sql[end + 1] == ch:
                end = sql.find(ch, end + 2)
            i = n if end == -1 else end + 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end == -1 else end + 1
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = n if end == -1 else end + 2
        elif ch == "$" and (tag := re.match(r"\$(\w*)\$", sql[i:])):
            end = sql.find(tag.group(0), i + len(tag.group(0)))
            i = n if end == -1 else end + len(tag.group(0))
        elif ch == ";":
            pieces.append(sql[start : i + 1])
            start = i = i + 1
        else:
            i += 1
    pieces.append(sql[start:])

    statements: list[str] = []
    pending = ""
    for index, piece in enumerate(pieces):
        pending += piece
        last = index == len(pieces) - 1
        if last or dialect != "sqlite" or sqlite3.complete_statement(pending):
            if _has_code(pending):
                statements.append(pending.strip().rstrip(";").strip())
            pending = ""
    return statements


def _has_code(sql: str) -> bool:
    without_comments = re.sub(r"--[^\n]*|/\*.*?\*/", "", sql, flags=re.DOTALL)
    return bool(without_comments.strip(" \t\r\n;"))


def load_migrations(directory: Path | None = None) -> list[Migration]:
    """The migration files, checked: numbered 0001.. without gaps, versions increasing."""
    directory = directory or MIGRATIONS_DIR
    migrations: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILENAME.match(path.name)
        if not match:
            raise MigrationError(
                f"{path}: migration files are named NNNN_lower_snake_name.sql "
                "(e.g. 0002_add_vehicle_vin.sql); rename it"
            )
        # Checksums ignore line-ending conversions made by git on other platforms.
        text = path.read_bytes().decode("utf-8").replace("\r\n", "\n")
        version = _VERSION_LINE.search(text)
        if not version or not _SEMVER.match(version.group(1)):
            raise MigrationError(
                f"{path}: the file must declare its semantic version on a line "
                "'-- version: MAJOR.MINOR.PATCH'"
            )
        migrations.append(
            Migration(
                number=int(match.group(1)),
                name=match.group(2),
                version=version.group(1),
                sql=text,
                checksum=hashlib.sha256(text.encode()).hexdigest(),
                path=path,
            )
        )
    for expected, migration in enumerate(migrations, start=1):
        if migration.number != expected:
            raise MigrationError(
                f"{migration.path}: expected migration number {expected:04d}; numbers "
                "start at 0001 and have no gaps or duplicates"
            )
    for before, after in itertools.pairwise(migrations):
        if _semver(after.version) <= _semver(before.version):
            raise MigrationError(
                f"{after.path}: version {after.version} must be greater than "
                f"{before.version} of {before.filename}"
            )
    return migrations


def _semver(version: str) -> tuple[int, int, int]:
    major, minor, patch = _SEMVER.match(version).groups()  # type: ignore[union-attr]
    return int(major), int(minor), int(patch)


_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    number INTEGER PRIMARY KEY,
    version VARCHAR(32) NOT NULL UNIQUE,
    name VARCHAR(255) NOT NULL,
    checksum CHAR(64) NOT NULL,
    applied_at {{timestamptz}} NOT NULL,
    execution_ms INTEGER NOT NULL
)
"""


def _lock_and_prepare(connection: Connection) -> None:
    """Inside a transaction: serialise migrators and make sure bookkeeping exists."""
    dialect = connection.dialect.name
    if dialect == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_LOCK_KEY})")
        connection.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {PG_SCHEMA}")
        # Migrations are written unqualified; this makes them land in fleet_core even
        # when the connection came from elsewhere.
        connection.exec_driver_sql(f"SET LOCAL search_path TO {PG_SCHEMA}, public")
    connection.exec_driver_sql(render(_BOOKKEEPING, dialect))


def _applied(connection: Connection) -> dict[int, tuple[str, str, str]]:
    rows = connection.exec_driver_sql(
        f"SELECT number, version, name, checksum FROM {MIGRATIONS_TABLE}"
    )
    return {number: (version, name, checksum) for number, version, name, checksum in rows}


def _verify(applied: dict[int, tuple[str, str, str]], migrations: list[Migration]) -> None:
    on_disk = {m.number: m for m in migrations}
    for number, (version, name, checksum) in sorted(applied.items()):
        migration = on_disk.get(number)
        if migration is None:
            newest = migrations[-1].version if migrations else "none"
            raise MigrationError(
                f"the database has migration {number:04d}_{name} (version {version}) that "
                f"this code does not know (its newest is {newest}); run a newer AtlasMesh "
                "against this database"
            )
        if migration.checksum != checksum:
            raise MigrationError(
                f"{migration.path} was changed after it was applied as version {version} "
                f"(checksum {checksum[:12]}… recorded, {migration.checksum[:12]}… on disk). "
                "Applied migrations are immutable: restore the file and put the change "
                "in a new migration"
            )


def migrate(url: str, migrations_dir: Path | None = None) -> list[str]:
    """Apply the pending migrations, each in its own transaction; return their versions.

    Re-running is a no-op; an applied migration whose file changed is refused.
    """
    migrations = load_migrations(migrations_dir)
    with connect(url) as connection:
        dialect = connection.dialect.name
        connection = connection.execution_options(sqlite_begin="IMMEDIATE")
        with connection.begin():
            _lock_and_prepare(connection)
            _verify(_applied(connection), migrations)
        versions: list[str] = []
        for migration in migrations:
            with connection.begin():
                _lock_and_prepare(connection)
                # Another process may have applied it while we waited for the lock.
                if migration.number in _applied(connection):
                    continue
                started = time.perf_counter()
                _apply(connection, migration, dialect)
                connection.execute(
                    sa.text(
                        f"INSERT INTO {MIGRATIONS_TABLE} "
                        "(number, version, name, checksum, applied_at, execution_ms) "
                        "VALUES (:number, :version, :name, :checksum, :applied_at, :ms)"
                    ),
                    {
                        "number": migration.number,
                        "version": migration.version,
                        "name": migration.name,
                        "checksum": migration.checksum,
                        "applied_at": _now_param(dialect),
                        "ms": round((time.perf_counter() - started) * 1000),
                    },
                )
            versions.append(migration.version)
        return versions


def _apply(connection: Connection, migration: Migration, dialect: str) -> None:
    statements = split_statements(render(migration.sql, dialect), dialect)
    for index, statement in enumerate(statements, start=1):
        try:
            connection.exec_driver_sql(statement)
        except sa.exc.DBAPIError as exc:
            first_line = statement.strip().splitlines()[0]
            raise MigrationError(
                f"{migration.path} (version {migration.version}) failed at statement "
                f"{index} of {len(statements)} ({first_line!r}): "
                f"{str(exc.orig).strip().splitlines()[0]}. Nothing of this migration was "
                "applied; fix the file and run migrate again"
            ) from exc


def _now_param(dialect: str) -> datetime | str:
    now = datetime.now(UTC)
    return timestamp_text(now) if dialect == "sqlite" else now


def _has_bookkeeping(connection: Connection) -> bool:
    if connection.dialect.name == "sqlite":
        query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = :name"
        return connection.execute(sa.text(query), {"name": MIGRATIONS_TABLE}).first() is not None
    found = connection.execute(
        sa.text("SELECT to_regclass(:name)"), {"name": f"{PG_SCHEMA}.{MIGRATIONS_TABLE}"}
    ).scalar()
    return found is not None


def applied_migrations(url: str) -> list[dict[str, object]]:
    """The recorded migrations, oldest first; empty for a database never migrated."""
    parsed = _normalise_url(url)
    path = _sqlite_file(parsed) if parsed.get_backend_name() == "sqlite" else None
    if path is not None and not path.exists():
        return []
    with connect(url) as connection:
        if not _has_bookkeeping(connection):
            return []
        rows = connection.execute(
            sa.text(
                "SELECT number, version, name, checksum, applied_at, execution_ms "
                f"FROM {MIGRATIONS_TABLE} ORDER BY number"
            )
        )
        applied = [dict(row._mapping) for row in rows]
    for row in applied:
        if isinstance(row["applied_at"], str):
            row["applied_at"] = datetime.fromisoformat(row["applied_at"])
    return applied


def current_version(url: str) -> str | None:
    """The semantic version of the newest applied migration, or None if never migrated."""
    applied = applied_migrations(url)
    return str(applied[-1]["version"]) if applied else None


def pending_migrations(url: str, migrations_dir: Path | None = None) -> list[Migration]:
    """Migrations on disk that the database has not applied yet."""
    done = {row["number"] for row in applied_migrations(url)}
    return [m for m in load_migrations(migrations_dir) if m.number not in done]
