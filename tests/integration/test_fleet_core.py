"""The fleet-core database behaves the same on SQLite and PostgreSQL: migrations and store."""

from __future__ import annotations

import re
import shutil
import threading
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from atlasmesh.fleet_core import db
from atlasmesh.fleet_core.cli import app
from atlasmesh.fleet_core.db import FleetCoreError, MigrationError
from atlasmesh.fleet_core.store import ConstraintViolation, FleetCoreStore
from tests.fixtures.services import free_port

pytestmark = pytest.mark.integration

SCHEMA_DOC = Path(__file__).resolve().parents[2] / "docs" / "fleet_core_schema.md"
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def _id() -> str:
    return str(uuid.uuid4())


def _documented_tables() -> dict[str, set[str]]:
    """Table -> columns, read from the table in docs/fleet_core_schema.md."""
    tables: dict[str, set[str]] = {}
    for line in SCHEMA_DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not re.fullmatch(r"[a-z_]+", cells[0]) or cells[0] == "table":
            continue
        columns = {entry.split()[0] for entry in cells[1].split(", ")}
        columns |= {"created_at", "updated_at"}
        if cells[2].startswith("yes"):
            columns.add("deleted_at")
        tables[cells[0]] = columns
    return tables


def _fleet(store: FleetCoreStore) -> str:
    """An organization and a fleet; returns the fleet id."""
    org, fleet = _id(), _id()
    store.upsert("organizations", [{"organization_id": org, "name": "Acme", "sector": "logistics"}])
    store.upsert(
        "fleets", [{"fleet_id": fleet, "organization_id": org, "name": "F1", "sector": "logistics"}]
    )
    return fleet


def _vehicle(fleet: str, n: int, **overrides: object) -> dict[str, object]:
    row: dict[str, object] = {
        "vehicle_id": str(uuid.UUID(int=n + 1)),
        "fleet_id": fleet,
        "asset_tag": f"AT-{n:05d}",
        "manufacturer": "Atlas",
        "model": "M1",
        "serial_number": f"SN-{n:07d}",
        "vehicle_profile": {"powertrain": "ev", "battery_kwh": 75.0},
        "current_status": "idle",
        "current_latitude": 24.45,
        "current_longitude": 54.38,
        "last_seen": T0,
    }
    row.update(overrides)
    return row


def _copy_migrations(tmp_path: Path) -> Path:
    directory = tmp_path / "migrations"
    shutil.copytree(db.MIGRATIONS_DIR, directory)
    return directory


def test_migrations_create_every_documented_table_and_column(fleet_core_url: str) -> None:
    assert db.current_version(fleet_core_url) is None
    assert db.migrate(fleet_core_url) == ["1.0.0"]
    assert db.current_version(fleet_core_url) == "1.0.0"
    with FleetCoreStore(fleet_core_url, migrate=False) as store:
        documented = _documented_tables()
        assert set(store.tables()) == set(documented)
        for table, columns in documented.items():
            assert set(store.columns(table)) == columns, table
        # Parents come before children, so loading in this order satisfies foreign keys.
        order = store.tables()
        assert order.index("organizations") < order.index("fleets") < order.index("vehicles")
        assert order.index("trips") < order.index("policy_decisions")


def test_migrate_is_idempotent_and_records_version_and_checksum(fleet_core_url: str) -> None:
    db.migrate(fleet_core_url)
    first = db.applied_migrations(fleet_core_url)
    assert db.migrate(fleet_core_url) == []
    assert db.applied_migrations(fleet_core_url) == first
    (record,) = first
    migration = db.load_migrations()[0]
    assert (record["number"], record["version"]) == (1, "1.0.0")
    assert record["checksum"] == migration.checksum
    assert record["applied_at"].tzinfo is not None
    assert db.pending_migrations(fleet_core_url) == []


def test_concurrent_migrations_apply_once(fleet_core_url: str) -> None:
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(db.migrate(fleet_core_url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(results) == [[], [], ["1.0.0"]]
    assert len(db.applied_migrations(fleet_core_url)) == 1


def test_a_new_migration_applies_on_top(fleet_core_url: str, tmp_path: Path) -> None:
    directory = _copy_migrations(tmp_path)
    db.migrate(fleet_core_url, directory)
    (directory / "0002_vehicle_vin.sql").write_text(
        "-- version: 1.1.0\n"
        "ALTER TABLE vehicles ADD COLUMN vin VARCHAR(17);\n"
        "ALTER TABLE vehicles ADD COLUMN commissioned_at {{timestamptz}};\n"
    )
    assert [m.version for m in db.pending_migrations(fleet_core_url, directory)] == ["1.1.0"]
    assert db.migrate(fleet_core_url, directory) == ["1.1.0"]
    assert db.current_version(fleet_core_url) == "1.1.0"
    with FleetCoreStore(fleet_core_url, migrate=False) as store:
        fleet = _fleet(store)
        store.upsert("vehicles", [_vehicle(fleet, 1, vin="WVWZZZ1JZXW000001", commissioned_at=T0)])
        (row,) = store.read("vehicles")
        assert (row["vin"], row["commissioned_at"]) == ("WVWZZZ1JZXW000001", T0)


def test_a_changed_applied_migration_is_refused(fleet_core_url: str, tmp_path: Path) -> None:
    directory = _copy_migrations(tmp_path)
    db.migrate(fleet_core_url, directory)
    path = directory / "0001_initial_schema.sql"
    path.write_text(path.read_text().replace("DEFAULT 'basic'", "DEFAULT 'premium'"))
    with pytest.raises(MigrationError, match=r"0001_initial_schema\.sql was changed after it was"):
        db.migrate(fleet_core_url, directory)
    assert db.current_version(fleet_core_url) == "1.0.0"


def test_a_failing_migration_leaves_nothing_behind(fleet_core_url: str, tmp_path: Path) -> None:
    directory = _copy_migrations(tmp_path)
    db.migrate(fleet_core_url, directory)
    (directory / "0002_broken.sql").write_text(
        "-- version: 1.1.0\n"
        "CREATE TABLE depots (depot_id {{uuid}} PRIMARY KEY);\n"
        "CREATE TABLE vehicles (vehicle_id {{uuid}} PRIMARY KEY);\n"
    )
    with pytest.raises(
        MigrationError, match=r"0002_broken\.sql \(version 1\.1\.0\) failed at statement 2"
    ):
        db.migrate(fleet_core_url, directory)
    assert db.current_version(fleet_core_url) == "1.0.0"
    with FleetCoreStore(fleet_core_url, migrate=False) as store:
        assert "depots" not in store.tables()


def test_a_database_newer_than_the_code_is_refused(fleet_core_url: str, tmp_path: Path) -> None:
    directory = _copy_migrations(tmp_path)
    (directory / "0002_more.sql").write_text("-- version: 2.0.0\nDROP INDEX idx_vehicles_status;\n")
    db.migrate(fleet_core_url, directory)
    with pytest.raises(MigrationError, match="does not know"):
        db.migrate(fleet_core_url)


def test_badly_named_or_versioned_migration_files_are_refused(tmp_path: Path) -> None:
    directory = _copy_migrations(tmp_path)
    (directory / "2_oops.sql").write_text("-- version: 1.1.0\nSELECT 1;\n")
    with pytest.raises(MigrationError, match=r"NNNN_lower_snake_name\.sql"):
        db.load_migrations(directory)
    (directory / "2_oops.sql").unlink()
    (directory / "0002_no_version.sql").write_text("SELECT 1;\n")
    with pytest.raises(MigrationError, match=r"-- version: MAJOR\.MINOR\.PATCH"):
        db.load_migrations(directory)
    (directory / "0002_no_version.sql").write_text("-- version: 0.9.0\nSELECT 1;\n")
    with pytest.raises(MigrationError, match=r"must be greater than 1\.0\.0"):
        db.load_migrations(directory)
    (directory / "0002_no_version.sql").unlink()
    (directory / "0003_gap.sql").write_text("-- version: 1.2.0\nSELECT 1;\n")
    with pytest.raises(MigrationError, match="expected migration number 0002"):
        db.load_migrations(directory)


def test_upsert_inserts_then_updates_and_moves_updated_at(fleet_core_url: str) -> None:
    with FleetCoreStore(fleet_core_url) as store:
        fleet = _fleet(store)
        assert store.upsert("vehicles", [_vehicle(fleet, 1)]) == 1
        (inserted,) = store.read("vehicles")
        assert inserted["vehicle_profile"] == {"powertrain": "ev", "battery_kwh": 75.0}
        assert inserted["last_seen"] == T0 and inserted["last_seen"].tzinfo is not None
        assert inserted["capabilities"] == {}  # the column default
        assert inserted["deleted_at"] is None
        assert inserted["created_at"] == inserted["updated_at"]

        # Rewriting identical rows writes nothing: extraction sees no change.
        assert store.upsert("vehicles", [_vehicle(fleet, 1)]) == 0
        assert store.read("vehicles") == [inserted]

        assert store.upsert("vehicles", [_vehicle(fleet, 1, current_status="driving")]) == 1
        (updated,) = store.read("vehicles")
        assert updated["current_status"] == "driving"
        assert updated["created_at"] == inserted["created_at"]
        assert updated["updated_at"] > inserted["updated_at"]

        # A partial row changes only the columns it names.
        vehicle_id = inserted["vehicle_id"]
        assert store.upsert("vehicles", [{"vehicle_id": vehicle_id, "model": "M2"}]) == 1
        (partial,) = store.read("vehicles", {"vehicle_id": vehicle_id})
        assert (partial["model"], partial["current_status"]) == ("M2", "driving")


def test_upsert_respects_given_timestamps_and_last_duplicate_wins(fleet_core_url: str) -> None:
    with FleetCoreStore(fleet_core_url) as store:
        fleet = _fleet(store)
        rows = [_vehicle(fleet, n, created_at=T0, updated_at=T0) for n in range(300)]
        rows.append(_vehicle(fleet, 7, current_status="charging", created_at=T0, updated_at=T0))
        assert store.upsert("vehicles", rows) == 300
        assert store.row_counts()["vehicles"] == 300
        (seventh,) = store.read("vehicles", {"asset_tag": "AT-00007"})
        assert seventh["current_status"] == "charging"
        assert seventh["updated_at"] == T0
        assert len(store.read("vehicles", {"current_status": "idle", "updated_at": T0})) == 299
        assert store.read("vehicles", {"current_latitude": None}) == []


def test_soft_delete_keeps_the_row_with_deleted_at(fleet_core_url: str) -> None:
    with FleetCoreStore(fleet_core_url) as store:
        fleet = _fleet(store)
        store.upsert("vehicles", [_vehicle(fleet, n) for n in range(3)])
        gone = str(uuid.UUID(int=2))
        at = datetime.now(UTC) + timedelta(seconds=1)
        assert store.soft_delete("vehicles", [gone], at) == 1
        rows = {row["vehicle_id"]: row for row in store.read("vehicles")}
        assert len(rows) == 3
        assert rows[gone]["deleted_at"] == at
        assert rows[gone]["updated_at"] == at
        assert [r["deleted_at"] for i, r in rows.items() if i != gone] == [None, None]

        # Deleting again keeps the first deletion time; updated_at never moves backwards.
        assert store.soft_delete("vehicles", [gone], at + timedelta(hours=1)) == 0
        assert store.read("vehicles", {"vehicle_id": gone})[0]["deleted_at"] == at
        earlier = at - timedelta(days=30)
        other = str(uuid.UUID(int=1))
        store.soft_delete("vehicles", [other], earlier)
        (row,) = store.read("vehicles", {"vehicle_id": other})
        assert row["deleted_at"] == earlier and row["updated_at"] > earlier

        with pytest.raises(FleetCoreError, match="'policy_decisions' has no soft delete"):
            store.soft_delete("policy_decisions", [_id()], at)


def test_foreign_keys_are_enforced_and_batches_are_atomic(fleet_core_url: str) -> None:
    with FleetCoreStore(fleet_core_url) as store:
        fleet = _fleet(store)
        orphan = _vehicle(_id(), 2)
        with pytest.raises(ConstraintViolation, match="vehicles: the database refused"):
            store.upsert("vehicles", [_vehicle(fleet, 1), orphan])
        assert store.read("vehicles") == []

        # Enforced by the database itself, not only by the store.
        engine = db.make_engine(fleet_core_url)
        try:
            with pytest.raises(sa.exc.IntegrityError), engine.begin() as connection:
                connection.exec_driver_sql("DELETE FROM organizations")
        finally:
            engine.dispose()


def test_upsert_many_writes_every_table_or_none(fleet_core_url: str) -> None:
    with FleetCoreStore(fleet_core_url) as store:
        fleet = _fleet(store)
        before = store.row_counts()
        org = {"organization_id": _id(), "name": "Beta", "sector": "transit"}
        orphan = _vehicle(_id(), 2)
        with pytest.raises(ConstraintViolation, match="vehicles: the database refused"):
            store.upsert_many({"organizations": [org], "vehicles": [_vehicle(fleet, 1), orphan]})
        # The organization written before the vehicles failed is rolled back with them.
        assert store.row_counts() == before
        written = store.upsert_many({"organizations": [org], "vehicles": [_vehicle(fleet, 1)]})
        assert written == {"organizations": 1, "vehicles": 1}
        assert store.row_counts()["organizations"] == before["organizations"] + 1


def test_check_and_unique_constraints_hold_on_both_backends(fleet_core_url: str) -> None:
    with FleetCoreStore(fleet_core_url) as store:
        fleet = _fleet(store)
        store.upsert("vehicles", [_vehicle(fleet, 1)])
        with pytest.raises(ConstraintViolation):
            store.upsert("vehicles", [_vehicle(fleet, 2, asset_tag="AT-00001")])
        with pytest.raises(ConstraintViolation):
            store.upsert("vehicles", [_vehicle(fleet, 3, current_latitude=91.0)])
        with pytest.raises(ConstraintViolation):
            store.upsert("vehicles", [_vehicle(fleet, 4, current_longitude=None)])


def test_unknown_tables_and_columns_get_clear_errors(fleet_core_url: str) -> None:
    with FleetCoreStore(fleet_core_url) as store:
        with pytest.raises(
            FleetCoreError, match=r"unknown fleet-core table 'vehicle'; tables are: .*vehicles"
        ):
            store.upsert("vehicle", [{"vehicle_id": _id()}])
        with pytest.raises(
            FleetCoreError, match=r"unknown column\(s\) 'colour' for table 'vehicles'"
        ):
            store.upsert("vehicles", [_vehicle(_id(), 1, colour="red")])
        with pytest.raises(FleetCoreError, match="lacks its primary key vehicle_id"):
            store.upsert("vehicles", [{"asset_tag": "x"}])
        with pytest.raises(FleetCoreError, match="unknown column"):
            store.read("vehicles", {"colour": "red"})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"last_seen": datetime(2026, 1, 1)},
            r"vehicles\.last_seen, row 1: expected a timezone-aware",
        ),
        ({"fleet_id": "not-a-uuid"}, r"vehicles\.fleet_id, row 1: expected a UUID"),
        ({"current_latitude": float("nan")}, r"current_latitude, row 1: expected a finite number"),
        ({"asset_tag": "A" * 101}, r"asset_tag, row 1: text of 101 characters exceeds"),
        ({"vehicle_profile": "{not json"}, r"vehicle_profile, row 1: a str for a JSON column"),
        ({"model": 7}, r"vehicles\.model, row 1: expected a str"),
    ],
)
def test_bad_values_are_refused_with_their_location(
    fleet_core_url: str, overrides: dict[str, object], message: str
) -> None:
    with FleetCoreStore(fleet_core_url) as store:
        fleet = _fleet(store)
        with pytest.raises(FleetCoreError, match=message):
            store.upsert("vehicles", [_vehicle(fleet, 0), _vehicle(fleet, 1, **overrides)])
        assert store.read("vehicles") == []


def test_values_are_normalised_the_same_way_on_both_backends(fleet_core_url: str) -> None:
    with FleetCoreStore(fleet_core_url) as store:
        fleet = _fleet(store)
        vehicle = uuid.uuid4()
        plus_four = datetime(2026, 3, 1, 16, 0, tzinfo=timezone(timedelta(hours=4)))
        store.upsert(
            "vehicles",
            [_vehicle(uuid.UUID(fleet).hex.upper(), 1, vehicle_id=vehicle, last_seen=plus_four)],
        )
        policy, decision, org = _id(), _id(), store.read("fleets")[0]["organization_id"]
        store.upsert(
            "policies",
            [{"policy_id": policy, "organization_id": org, "name": "speed", "version": "1"}],
        )
        store.upsert(
            "policy_decisions",
            [
                {
                    "decision_id": decision,
                    "policy_id": policy,
                    "vehicle_id": vehicle,
                    "action": "assign_trip",
                    "decision": "DENY",
                    "reason": "battery below 20%",
                    "context": '{"battery": 0.18}',
                    "decided_at": T0,
                }
            ],
        )
        (row,) = store.read("vehicles")
        assert row["vehicle_id"] == str(vehicle)
        assert row["fleet_id"] == fleet
        assert row["last_seen"] == plus_four and row["last_seen"].utcoffset() == timedelta(0)
        (logged,) = store.read("policy_decisions", {"vehicle_id": str(vehicle)})
        assert logged["context"] == {"battery": 0.18}
        assert logged["trip_id"] is None
        with pytest.raises(ConstraintViolation):
            store.upsert(
                "policy_decisions", [{**logged, "decision_id": _id(), "decision": "MAYBE"}]
            )


def test_truncate_all_empties_tables_and_keeps_the_schema(fleet_core_url: str) -> None:
    with FleetCoreStore(fleet_core_url) as store:
        fleet = _fleet(store)
        store.upsert("vehicles", [_vehicle(fleet, n) for n in range(5)])
        store.truncate_all()
        assert set(store.row_counts().values()) == {0}
        assert db.current_version(fleet_core_url) == "1.0.0"
        _fleet(store)
        assert store.row_counts()["fleets"] == 1


def test_cli_migrate_and_status(fleet_core_url: str, tmp_path: Path) -> None:
    url = fleet_core_url
    if url.startswith("postgresql"):
        # Trust auth ignores the password: it is there to prove status never prints it.
        url = url.replace("postgres@", "postgres:s3cret-pw@")
    env = {"ATLASMESH_FLEET_CORE_DSN": url, "ATLASMESH_HOME": str(tmp_path)}
    runner = CliRunner()

    before = runner.invoke(app, ["status"], env=env)
    assert before.exit_code == 0, before.output
    assert "none (never migrated)" in before.output
    assert "0001_initial_schema.sql (1.0.0)" in before.output

    migrated = runner.invoke(app, ["migrate"], env=env)
    assert migrated.exit_code == 0, migrated.output
    assert "applied 1.0.0" in migrated.output
    again = runner.invoke(app, ["migrate"], env=env)
    assert "already at schema version 1.0.0" in again.output

    with FleetCoreStore(url) as store:
        _fleet(store)
    status = runner.invoke(app, ["status"], env=env)
    assert status.exit_code == 0, status.output
    assert "schema version: 1.0.0" in status.output
    assert re.search(r"fleets\s+1\n", status.output)
    assert "s3cret-pw" not in status.output


def test_unusable_dsns_get_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FleetCoreError, match="supported are sqlite"):
        db.migrate("mysql://root@localhost/fleet")
    with pytest.raises(FleetCoreError, match="only psycopg"):
        db.migrate("postgresql+psycopg2://postgres@127.0.0.1/fleet")
    closed = f"postgresql://postgres:pw@127.0.0.1:{free_port()}/fleet"
    with pytest.raises(FleetCoreError, match="cannot connect to the fleet-core database") as info:
        db.migrate(closed)
    assert "pw@" not in str(info.value)
    result = CliRunner().invoke(
        app, ["migrate"], env={"ATLASMESH_FLEET_CORE_DSN": closed, "ATLASMESH_HOME": str(tmp_path)}
    )
    assert result.exit_code == 1
    assert "error: cannot connect" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("dsn", "message"),
    [
        ("postgresql://u:hunter2@127.0.0.1:notaport/fleet", "is not a URL"),
        ("sqlite://", "in-memory SQLite"),
        ("sqlite:///:memory:", "in-memory SQLite"),
    ],
)
@pytest.mark.parametrize("command", ["status", "migrate"])
def test_malformed_and_memory_dsns_are_one_line_errors(
    tmp_path: Path, dsn: str, message: str, command: str
) -> None:
    env = {"ATLASMESH_FLEET_CORE_DSN": dsn, "ATLASMESH_HOME": str(tmp_path)}
    result = CliRunner().invoke(app, [command], env=env)
    assert result.exit_code == 1 and not isinstance(result.exception, ValueError), result.output
    assert message in result.output and "hunter2" not in result.output


def test_mask_url_hides_passwords() -> None:
    assert db.mask_url("postgresql://u:hunter2@db:5432/f") == "postgresql://u:***@db:5432/f"
    assert "hunter2" not in db.mask_url("postgresql://u@db/f?password=hunter2")


def test_split_statements_respects_quotes_comments_and_bodies() -> None:
    sql = (
        "-- a comment; with a semicolon\n"
        "CREATE TABLE a (x TEXT DEFAULT 'semi;colon', \"odd;name\" INT);\n"
        "/* block; comment */\n"
        "CREATE FUNCTION f() RETURNS trigger AS $$ BEGIN NEW.x := 'y'; RETURN NEW; END $$ "
        "LANGUAGE plpgsql;\n"
        "INSERT INTO a VALUES ('it''s; fine', 1)"
    )
    statements = db.split_statements(sql, "postgresql")
    assert len(statements) == 3
    assert statements[1].endswith("LANGUAGE plpgsql")
    trigger = (
        "CREATE TRIGGER t AFTER UPDATE ON a BEGIN UPDATE a SET x = 'z'; SELECT 1; END;\n"
        "CREATE INDEX i ON a (x);"
    )
    assert len(db.split_statements(trigger, "sqlite")) == 2
