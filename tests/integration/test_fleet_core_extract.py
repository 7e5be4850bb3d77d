"""Incremental fleet-core extraction into the lake and ClickHouse, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import secrets
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest

from atlasmesh.fleet_core import extract
from atlasmesh.fleet_core.db import connect
from atlasmesh.fleet_core.extract import ALLOW_LIST, ExtractError, extract_all, extract_table
from atlasmesh.fleet_core.store import FleetCoreStore
from atlasmesh.lake import Lake

pytestmark = pytest.mark.integration


@pytest.fixture
def store(fleet_core_url: str) -> Iterator[FleetCoreStore]:
    with FleetCoreStore(fleet_core_url) as opened:
        yield opened


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake(f"file://{tmp_path / 'lake'}")


def _id() -> str:
    return str(uuid.uuid4())


def _credentials() -> dict[str, str]:
    """Real-looking, unique credentials, so a scan for them cannot match by accident."""
    salt = base64.b64encode(secrets.token_bytes(16)).decode().rstrip("=")
    digest = base64.b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    key_body = base64.b64encode(secrets.token_bytes(48)).decode()
    return {
        "password_hash": f"$argon2id$v=19$m=65536,t=3,p=4${salt}${digest}",
        "private_key_pem": f"-----BEGIN PRIVATE KEY-----\n{key_body}\n-----END PRIVATE KEY-----\n",
        "encrypted_value": "vault:v1:" + base64.b64encode(secrets.token_bytes(40)).decode(),
    }


def _seed(store: FleetCoreStore, credentials: dict[str, str]) -> list[str]:
    """At least one row in every fleet-core table; returns the five vehicle ids."""
    now = datetime.now(UTC).replace(microsecond=123456)
    org, fleet, route, trip, policy = _id(), _id(), _id(), _id(), _id()
    vehicles = [_id() for _ in range(5)]
    store.upsert(
        "organizations",
        [
            {
                "organization_id": org,
                "name": "Acme",
                "sector": "logistics",
                "configuration": {"region": "eu", "limits": {"speed": 80}},
            }
        ],
    )
    store.upsert(
        "fleets",
        [{"fleet_id": fleet, "organization_id": org, "name": "North", "sector": "logistics"}],
    )
    store.upsert(
        "vehicles",
        [
            {
                "vehicle_id": vid,
                "fleet_id": fleet,
                "asset_tag": f"AT-{i}",
                "manufacturer": "Volvo",
                "model": "FH Electric",
                "serial_number": f"SN-{i}",
                "vehicle_profile": {"powertrain": "ev", "battery_kwh": 540.0, "max_load_kg": 1e4},
                "current_status": "active",
                "current_latitude": 59.33 + i / 100,
                "current_longitude": 18.06,
                "last_seen": now,
            }
            for i, vid in enumerate(vehicles)
        ],
    )
    store.upsert(
        "routes",
        [
            {
                "route_id": route,
                "organization_id": org,
                "name": "R1",
                "distance_km": 12.5,
                "waypoints": [{"lat": 59.3, "lon": 18.0}, {"lat": 59.4, "lon": 18.1}],
                "estimated_duration_minutes": 25,
            }
        ],
    )
    store.upsert(
        "trips",
        [
            {
                "trip_id": trip,
                "vehicle_id": vehicles[0],
                "route_id": route,
                "mission_type": "delivery",
                "scheduled_start": now,
                "origin_latitude": 59.3,
                "origin_longitude": 18.0,
            }
        ],
    )
    store.upsert(
        "policies",
        [
            {
                "policy_id": policy,
                "organization_id": org,
                "name": "speed",
                "version": "1.0.0",
                "rego_code": "package fleet\ndefault allow = false",
                "is_active": True,
            }
        ],
    )
    store.upsert(
        "policy_decisions",
        [
            {
                "decision_id": _id(),
                "policy_id": policy,
                "vehicle_id": vehicles[0],
                "trip_id": None,
                "action": "dispatch",
                "decision": "ALLOW",
                "decided_at": now,
                "context": {"n": 1},
            }
        ],
    )
    store.upsert(
        "vehicle_commands",
        [
            {
                "command_id": _id(),
                "vehicle_id": vehicles[1],
                "command_type": "lock",
                "issued_at": now,
                "priority": "high",
            }
        ],
    )
    store.upsert(
        "maintenance_records",
        [
            {
                "maintenance_id": _id(),
                "vehicle_id": vehicles[2],
                "maintenance_type": "scheduled",
                "component": "brakes",
                "cost": 420.0,
                "parts_used": ["pad", "disc"],
            }
        ],
    )
    store.upsert(
        "alerts",
        [
            {
                "alert_id": _id(),
                "vehicle_id": vehicles[3],
                "alert_type": "battery_low",
                "severity": "high",
                "triggered_at": now,
                "message": "battery at 9%",
            }
        ],
    )
    store.upsert(
        "users",
        [
            {
                "user_id": _id(),
                "organization_id": org,
                "username": f"ops{i}",
                "email": f"ops{i}@acme.test",
                "password_hash": credentials["password_hash"],
                "roles": ["operator"],
                "is_active": True,
            }
            for i in range(2)
        ],
    )
    store.upsert(
        "certificates",
        [
            {
                "certificate_id": _id(),
                "vehicle_id": vehicles[0],
                "certificate_type": "device",
                "certificate_pem": "-----BEGIN CERTIFICATE-----\nMIIBcert\n-----END CERTIFICATE-----",
                "private_key_pem": credentials["private_key_pem"],
                "issued_at": now,
                "expires_at": now + timedelta(days=365),
                "issuer": "AtlasMesh CA",
            }
        ],
    )
    store.upsert(
        "secrets",
        [
            {
                "secret_id": _id(),
                "organization_id": org,
                "secret_name": "telematics-api",
                "secret_type": "api_key",
                "encrypted_value": credentials["encrypted_value"],
                "encryption_key_id": "kms-key-7",
            }
        ],
    )
    return vehicles


def _normalise(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value


def _comparable(table: str, row: dict[str, Any]) -> dict[str, Any]:
    """A row's allow-listed columns with JSON parsed, ids as str and times as UTC datetimes."""
    out = {}
    for name, kind in ALLOW_LIST[table].items():
        value = _normalise(row[name])
        if kind.startswith("json") and isinstance(value, str):
            value = orjson.loads(value)
        out[name] = value
    return out


def _source(store: FleetCoreStore, table: str) -> list[dict[str, Any]]:
    return [_comparable(table, row) for row in store.read(table)]


def _warehouse(client: Any, database: str, table: str, view: str = "") -> list[dict[str, Any]]:
    key = next(iter(ALLOW_LIST[table]))
    source = f"`{database}`.`{table}_current`" if view else f"`{database}`.`{table}` FINAL"
    result = client.query(f"SELECT * FROM {source} ORDER BY toString({key})")
    return [
        _comparable(table, dict(zip(result.column_names, row, strict=True)))
        for row in result.result_rows
    ]


def _lake_rows(lake: Lake, table: str) -> list[dict[str, Any]]:
    """Every row of every batch file of a table, duplicates included."""
    files = lake.glob(f"snapshots/fleet_core/{table}/**/*.parquet")
    rows: list[dict[str, Any]] = []
    for entry in files:
        with lake.open(entry.path) as f:
            rows.extend(pq.read_table(f).to_pylist())
    return rows


def _latest(table: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    key = next(iter(ALLOW_LIST[table]))
    newest: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row[key] not in newest or row["_version"] > newest[row[key]]["_version"]:
            newest[row[key]] = row
    return [_comparable(table, newest[k]) for k in sorted(newest)]


def _lake_digest(lake: Lake) -> dict[str, str]:
    entries = lake.glob("snapshots/fleet_core/**/*.parquet")
    return {e.path: hashlib.sha256(lake.read_bytes(e.path)).hexdigest() for e in entries}


def test_first_extraction_copies_every_row_of_every_table(
    store: FleetCoreStore, lake: Lake, ch_client: Any, ch_database: str
) -> None:
    _seed(store, _credentials())
    results = extract_all(store.url, lake, ch_client, now=datetime.now(UTC), database=ch_database)

    assert sorted(results) == sorted(store.tables())
    counts = store.row_counts()
    for table, result in results.items():
        source = _source(store, table)
        assert result.rows_written == result.rows_read == counts[table] > 0, table
        assert result.unlisted_columns == (), table
        assert result.watermark_before is None and result.bytes_written > 0
        assert result.watermark_after == max(row["updated_at"] for row in source)
        assert _warehouse(ch_client, ch_database, table) == source, table
        assert _warehouse(ch_client, ch_database, table, view="current") == source, table
        assert _latest(table, _lake_rows(lake, table)) == source, table
    metadata = results["vehicles"].metadata()
    assert metadata["rows_written"] == 5 and metadata["files"] == 1


def test_update_and_late_commit_within_overlap_are_picked_up(
    store: FleetCoreStore, lake: Lake, ch_client: Any, ch_database: str
) -> None:
    vehicles = _seed(store, _credentials())
    tables = ["vehicles", "alerts"]
    first = extract_all(
        store.url, lake, ch_client, now=datetime.now(UTC), database=ch_database, tables=tables
    )
    watermark = first["alerts"].watermark_after
    assert watermark is not None

    store.upsert("vehicles", [{"vehicle_id": vehicles[1], "current_status": "charging"}])
    # A transaction that stamped its row before the last extraction but committed after it.
    late = {
        "alert_id": _id(),
        "vehicle_id": vehicles[0],
        "alert_type": "door_open",
        "severity": "low",
        "triggered_at": watermark - timedelta(minutes=3),
        "created_at": watermark - timedelta(minutes=3),
        "updated_at": watermark - timedelta(minutes=3),
    }
    store.upsert("alerts", [late])

    now = datetime.now(UTC)
    update = extract_table(store.url, "vehicles", lake, ch_client, now=now, database=ch_database)
    assert (update.rows_written, update.rows_unchanged) == (1, 4)
    status = {
        r["vehicle_id"]: r["current_status"]
        for r in _warehouse(ch_client, ch_database, "vehicles", view="current")
    }
    assert status[vehicles[1]] == "charging"

    # Without an overlap the late commit is invisible: it is older than the watermark.
    blind = extract_table(
        store.url, "alerts", lake, ch_client, now=now, overlap=timedelta(0), database=ch_database
    )
    assert blind.rows_written == 0
    caught = extract_table(store.url, "alerts", lake, ch_client, now=now, database=ch_database)
    assert caught.rows_written == 1 and caught.read_from == watermark - timedelta(minutes=10)
    assert _warehouse(ch_client, ch_database, "alerts") == _source(store, "alerts")
    assert _latest("alerts", _lake_rows(lake, "alerts")) == _source(store, "alerts")


def test_soft_delete_is_carried_and_the_current_view_excludes_it(
    store: FleetCoreStore, lake: Lake, ch_client: Any, ch_database: str
) -> None:
    vehicles = _seed(store, _credentials())
    extract_table(
        store.url, "vehicles", lake, ch_client, now=datetime.now(UTC), database=ch_database
    )
    gone = vehicles[4]
    store.soft_delete("vehicles", [gone], datetime.now(UTC))

    result = extract_table(
        store.url, "vehicles", lake, ch_client, now=datetime.now(UTC), database=ch_database
    )

    assert (result.rows_written, result.deletes) == (1, 1)
    current = {r["vehicle_id"] for r in _warehouse(ch_client, ch_database, "vehicles", "current")}
    assert current == set(vehicles[:4])
    final = {r["vehicle_id"]: r for r in _warehouse(ch_client, ch_database, "vehicles")}
    assert final[gone]["deleted_at"] is not None
    lake_versions = [r for r in _lake_rows(lake, "vehicles") if r["vehicle_id"] == gone]
    assert sorted(r["_is_deleted"] for r in lake_versions) == [False, True]


def test_rerun_and_full_backfill_are_idempotent(
    store: FleetCoreStore, lake: Lake, ch_client: Any, ch_database: str
) -> None:
    _seed(store, _credentials())
    now = datetime.now(UTC)
    first = extract_all(store.url, lake, ch_client, now=now, database=ch_database)
    files = _lake_digest(lake)
    counts = {t: ch_client.command(f"SELECT count() FROM `{ch_database}`.`{t}`") for t in first}
    content = {t: _warehouse(ch_client, ch_database, t) for t in first}

    again = extract_all(store.url, lake, ch_client, now=now, database=ch_database)
    later = now + timedelta(hours=1)
    backfill = extract_all(store.url, lake, ch_client, now=later, full=True, database=ch_database)

    for table in first:
        assert again[table].rows_written == backfill[table].rows_written == 0, table
        assert again[table].rows_read == first[table].rows_read, table
        assert backfill[table].rows_unchanged == first[table].rows_written, table
        assert again[table].watermark_after == first[table].watermark_after, table
        assert ch_client.command(f"SELECT count() FROM `{ch_database}`.`{table}`") == counts[table]
        assert _warehouse(ch_client, ch_database, table) == content[table]
    assert _lake_digest(lake) == files


class _WarehouseDropsAfter:
    """A client whose n-th insert fails, as if the warehouse died mid-extraction."""

    def __init__(self, client: Any, fail_on: int) -> None:
        self._client, self._fail_on, self.inserts = client, fail_on, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def insert_arrow(self, *args: Any, **kwargs: Any) -> Any:
        self.inserts += 1
        if self.inserts == self._fail_on:
            raise ConnectionResetError("warehouse connection reset")
        return self._client.insert_arrow(*args, **kwargs)


def test_crash_between_lake_and_warehouse_loses_and_duplicates_nothing(
    store: FleetCoreStore, lake: Lake, ch_client: Any, ch_database: str
) -> None:
    _seed(store, _credentials())
    flaky = _WarehouseDropsAfter(ch_client, fail_on=2)
    with pytest.raises(ConnectionResetError):
        extract_table(
            store.url,
            "vehicles",
            lake,
            flaky,
            now=datetime.now(UTC),
            database=ch_database,
            chunk_rows=2,
        )
    assert ch_client.command(f"SELECT count() FROM `{ch_database}`.vehicles") == 2

    result = extract_table(
        store.url,
        "vehicles",
        lake,
        ch_client,
        now=datetime.now(UTC),
        database=ch_database,
        chunk_rows=2,
    )

    assert (result.rows_written, result.rows_unchanged) == (3, 2)
    assert len(result.files) == 2
    rows = _lake_rows(lake, "vehicles")
    assert len(rows) == 5, "the batch written before the crash was overwritten, not repeated"
    assert _latest("vehicles", rows) == _source(store, "vehicles")
    assert _warehouse(ch_client, ch_database, "vehicles") == _source(store, "vehicles")


def test_credentials_never_leave_the_source(
    store: FleetCoreStore, lake: Lake, ch_client: Any, ch_database: str
) -> None:
    credentials = _credentials()
    _seed(store, credentials)
    extract_all(store.url, lake, ch_client, now=datetime.now(UTC), database=ch_database)
    # The source really holds them, so their absence below is the extractor's doing.
    assert store.read("users")[0]["password_hash"] == credentials["password_hash"]
    needles = [*credentials.values(), "BEGIN PRIVATE KEY", "$argon2id$", "vault:v1:"]

    files = lake.glob("snapshots/fleet_core/**/*.parquet")
    assert {f.path.split("/")[2] for f in files} == set(ALLOW_LIST)
    for entry in files:
        with lake.open(entry.path) as f:
            parquet = pq.read_table(f)
        assert not set(parquet.column_names) & extract.DENIED_COLUMNS, entry.path
        text = orjson.dumps(parquet.to_pylist(), default=str).decode()
        text += str(parquet.schema.metadata)
        assert not [n for n in needles if n in text], entry.path

    columns = ch_client.query(
        "SELECT table, name FROM system.columns WHERE database = {db:String}",
        parameters={"db": ch_database},
    ).result_rows
    assert columns and not {name for _, name in columns} & extract.DENIED_COLUMNS
    for table in {table for table, _ in columns}:
        dump = ch_client.raw_query(f"SELECT * FROM `{ch_database}`.`{table}` FORMAT TSVRaw")
        assert dump, table
        assert not [n for n in needles if n.encode() in dump], table


def test_deny_list_refuses_a_credential_added_to_the_allow_list() -> None:
    for column in ("password_hash", "private_key_pem", "encrypted_value", "admin_password"):
        tampered = {t: dict(c) for t, c in ALLOW_LIST.items()}
        tampered["users"][column] = "text?"
        with pytest.raises(ExtractError, match=f"refusing to extract users.{column}"):
            extract.check_allow_list(tampered)


def test_bad_inputs_give_clear_errors(
    fleet_core_url: str, lake: Lake, ch_client: Any, ch_database: str
) -> None:
    now = datetime.now(UTC)
    with pytest.raises(ExtractError, match=r"unknown fleet-core table 'vehicle'.*vehicles"):
        extract_table(fleet_core_url, "vehicle", lake, ch_client, now=now, database=ch_database)
    with pytest.raises(ExtractError, match="timezone-aware"):
        extract_table(
            fleet_core_url,
            "vehicles",
            lake,
            ch_client,
            now=now.replace(tzinfo=None),
            database=ch_database,
        )
    with pytest.raises(ExtractError, match="overlap must be"):
        extract_all(fleet_core_url, lake, ch_client, now=now, overlap=timedelta(minutes=-1))
    with pytest.raises(ExtractError, match="database name 'fleet-core'"):
        extract_all(fleet_core_url, lake, ch_client, now=now, database="fleet-core")
    # The database exists but was never migrated.
    with pytest.raises(ExtractError, match=r"has no table 'vehicles'.*fleet-core migrate"):
        extract_table(fleet_core_url, "vehicles", lake, ch_client, now=now, database=ch_database)
    with pytest.raises(ExtractError, match="cannot connect to the fleet-core database"):
        extract_table(
            "postgresql://nobody@127.0.0.1:1/none",
            "vehicles",
            lake,
            ch_client,
            now=now,
            database=ch_database,
        )


def test_a_column_outside_the_allow_list_is_reported_and_never_extracted(
    store: FleetCoreStore, lake: Lake, ch_client: Any, ch_database: str
) -> None:
    _seed(store, _credentials())
    token = f"tok_{secrets.token_hex(16)}"
    users = "users" if store.url.startswith("sqlite") else "fleet_core.users"
    with connect(store.url) as connection, connection.begin():
        # A later migration adds a column nobody classified yet.
        connection.exec_driver_sql(f"ALTER TABLE {users} ADD COLUMN api_token TEXT")
        connection.exec_driver_sql(f"UPDATE {users} SET api_token = '{token}'")

    result = extract_table(
        store.url, "users", lake, ch_client, now=datetime.now(UTC), database=ch_database
    )

    assert result.unlisted_columns == ("api_token",) and result.rows_written == 2
    assert token.encode() not in ch_client.raw_query(
        f"SELECT * FROM `{ch_database}`.users FORMAT TSVRaw"
    )
    assert all("api_token" not in row for row in _lake_rows(lake, "users"))


def test_a_newly_allowed_column_is_backfilled_without_asking(
    tmp_path: Path, lake: Lake, ch_client: Any, ch_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Warehouse-side logic: one source backend is enough.
    store = FleetCoreStore(f"sqlite:///{tmp_path / 'fleet_core.db'}")
    _seed(store, _credentials())
    before = extract.SPECS["users"]
    narrower = extract.TableSpec("users", tuple(c for c in before.columns if c.name != "email"))
    monkeypatch.setitem(extract.SPECS, "users", narrower)
    extract_table(store.url, "users", lake, ch_client, now=datetime.now(UTC), database=ch_database)
    monkeypatch.setitem(extract.SPECS, "users", before)

    # Far in the future, so an incremental read would see none of the existing rows.
    later = datetime.now(UTC) + timedelta(days=2)
    widened = extract_table(store.url, "users", lake, ch_client, now=later, database=ch_database)

    assert widened.read_from is None and widened.rows_written == 2
    assert _warehouse(ch_client, ch_database, "users", view="current") == _source(store, "users")
    store.close()


def test_extracts_to_an_s3_lake(
    s3_server: Any, tmp_path: Path, ch_client: Any, ch_database: str
) -> None:
    with FleetCoreStore(f"sqlite:///{tmp_path / 'fleet_core.db'}") as source:
        _seed(source, _credentials())
        lake = Lake.from_settings(s3_server.settings(prefix=f"extract-{uuid.uuid4().hex[:8]}"))
        now = datetime.now(UTC)
        first = extract_table(
            source.url, "vehicles", lake, ch_client, now=now, database=ch_database
        )
        again = extract_table(
            source.url, "vehicles", lake, ch_client, now=now, database=ch_database
        )

        assert (first.rows_written, again.rows_written) == (5, 0)
        assert [e.path for e in lake.glob("snapshots/fleet_core/vehicles/**/*.parquet")] == list(
            first.files
        )
        assert _latest("vehicles", _lake_rows(lake, "vehicles")) == _source(source, "vehicles")
