"""Quality suites, Data Docs, the score and its history against the embedded warehouse.

Crafted hours are loaded with the hot path's own loader into throwaway databases; the
simulated fleet shows the gate and the score on what the real pipeline produced.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
import pyarrow as pa
import pytest

from atlasmesh.fleet_core.extract import clickhouse_ddl
from atlasmesh.telemetry.registry import PROCESSED_SCHEMA
from atlasmesh.warehouse.telemetry import load_hour
from quality import context as qc
from quality import score as qs
from quality.suites import marts
from quality.validate import (
    validate_fleet_core,
    validate_mart,
    validate_telemetry_hour,
    validate_telemetry_hours,
)

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("fleet")]


VEHICLES = [str(uuid.UUID(int=0xA7 << 120 | i)) for i in range(1, 5)]
GHOST = str(uuid.UUID(int=0xDEAD << 112 | 1))
POINTS = 60  # one fix a minute per vehicle
STEP_S = 60
SPEED_KMH = 36.0
STEP_KM = SPEED_KMH * STEP_S / 3600
DEG_PER_KM = 1 / 111.2


def recent_hour(now: datetime | None = None) -> datetime:
    """An hour whose rows, loaded now, are still within the queryable latency budget."""
    now = now or datetime.now(UTC)
    return now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)


def track(vehicle: str, index: int, hour: datetime, points: int = POINTS) -> list[dict[str, Any]]:
    """A vehicle driving north at 36 km/h, one plausible fix a minute, arriving 20 s later."""
    rows = []
    for i in range(points):
        at = hour + timedelta(seconds=i * STEP_S)
        rows.append(
            {
                "telemetry_id": str(uuid.uuid4()),
                "vehicle_id": vehicle,
                "recorded_at": at,
                "ingested_at": at + timedelta(seconds=20),
                "latitude": 48.0 + index * 0.1 + i * STEP_KM * DEG_PER_KM,
                "longitude": 11.5,
                "speed_kmh": SPEED_KMH,
                "heading_degrees": 0.0,
                "battery_level_percent": 80.0 - i * 0.1,
                "fuel_level_percent": None,
                "odometer_km": 1000.0 * (index + 1) + i * STEP_KM,
                "firmware_version": "2.1.0",
                "sensor_readings": orjson.dumps({"tire_pressure_fl_kpa": 230.0}).decode(),
                "diagnostic_codes": [],
                "environmental_conditions": orjson.dumps({"ambient_temp_c": 12.0}).decode(),
                "operational_status": "driving",
                "custom_data": None,
                "schema_version": "2.0.0",
                "motor_temp_c": 60.0,
                "tire_pressure_fl_kpa": 230.0,
                "tire_pressure_fr_kpa": 231.0,
                "tire_pressure_rl_kpa": 229.0,
                "tire_pressure_rr_kpa": 230.5,
                "aux_battery_v": 12.7,
                "source_file": f"landing/telemetry/schema=v2/test-{vehicle[:8]}.jsonl.gz",
                "line_number": i + 1,
            }
        )
    return rows


def clean_rows(hour: datetime) -> list[dict[str, Any]]:
    """Four vehicles, an hour of plausible fixes each."""
    return [row for i, v in enumerate(VEHICLES) for row in track(v, i, hour)]


def table(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows as a processed-telemetry Arrow table (absent columns null)."""
    columns = {
        f.name: pa.array([r.get(f.name) for r in rows], type=f.type) for f in PROCESSED_SCHEMA
    }
    return pa.table(columns, schema=PROCESSED_SCHEMA)


def of_vehicle(rows: list[dict[str, Any]], vehicle: str) -> list[dict[str, Any]]:
    """The rows of one vehicle, in time order (the same dicts, for editing in place)."""
    return sorted((r for r in rows if r["vehicle_id"] == vehicle), key=lambda r: r["recorded_at"])


def teleport(rows: list[dict[str, Any]], vehicle: str, at: list[int]) -> None:
    """Move single fixes 100 km away: two implausible steps each (there and back)."""
    track_rows = of_vehicle(rows, vehicle)
    for i in at:
        track_rows[i]["latitude"] += 100 * DEG_PER_KM


def roll_back_odometer(rows: list[dict[str, Any]], vehicle: str, at: list[int]) -> None:
    """Odometer readings 5 km below the previous one."""
    track_rows = of_vehicle(rows, vehicle)
    for i in at:
        track_rows[i]["odometer_km"] -= 5.0


def add_ghost(rows: list[dict[str, Any]], hour: datetime, points: int = 10) -> None:
    """Rows of a vehicle fleet-core does not know."""
    rows.extend(track(GHOST, 9, hour, points))


def duplicate(rows: list[dict[str, Any]], index: int = 0) -> None:
    """The same event stored twice."""
    rows.append(dict(rows[index]))


# --- Fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def databases(warehouse_service) -> Iterator[Any]:
    """A factory of throwaway databases on the shared service, all dropped after the test."""
    admin = warehouse_service.client()
    made: list[str] = []

    def make(prefix: str = "q") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        admin.command(f"CREATE DATABASE {name}")
        made.append(name)
        return name

    yield make
    for name in made:
        admin.command(f"DROP DATABASE IF EXISTS {name} SYNC")
    admin.close()


@pytest.fixture
def fleet_core_db(warehouse_service, databases) -> str:
    """A fleet-core extract holding the four crafted vehicles (not the ghost)."""
    name = databases("fc")
    client = warehouse_service.client()
    for statement in clickhouse_ddl("vehicles", name):
        client.command(statement)
    for i, vehicle in enumerate(VEHICLES):
        _insert_entity(
            client, name, "vehicles", vehicle_id=vehicle, asset_tag=f"T{i}", serial_number=f"S{i}"
        )
    client.close()
    return name


def _insert_entity(
    client, database: str, table: str, *, deleted: bool = False, version: int = 1, **values: Any
) -> None:
    """One extracted row version with the bookkeeping columns extraction writes."""
    now = datetime.now(UTC)
    row = {
        **values,
        "created_at": now,
        "updated_at": now,
        "_is_deleted": deleted,
        "_version": version,
        "_row_hash": 0,
        "_extracted_at": now,
    }
    client.insert(f"`{database}`.`{table}`", [list(row.values())], column_names=list(row))


def _load(warehouse_service, database: str, hour: datetime, rows: list[dict[str, Any]]) -> None:
    client = warehouse_service.client()
    try:
        load_hour(client, hour, table(rows), database=database)
    finally:
        client.close()


# --- The telemetry gate ---------------------------------------------------------------------------


def test_a_clean_hour_passes_and_its_data_docs_page_exists(
    warehouse_service, databases, fleet_core_db
) -> None:
    db = databases("tel")
    hour = recent_hour()
    rows = clean_rows(hour)
    _load(warehouse_service, db, hour, rows)
    settings = warehouse_service.settings
    outcome = validate_telemetry_hour(
        settings, hour, expected_rows=len(rows), database=db, fleet_core_database=fleet_core_db
    )
    assert outcome.success, [r.describe() for r in outcome.failures]
    assert not outcome.failures and not outcome.warnings
    assert outcome.profile["rows"] == len(rows)
    assert outcome.rule("plausible_speed_between_points").observed == 0
    assert outcome.rule("arrival_latency_p95").observed == pytest.approx(20.0)
    # Data Docs: the run's page and the index, inside the folder `make docs` serves.
    site = qc.docs_site_dir(settings)
    assert outcome.docs_path is not None and outcome.docs_path.is_file()
    assert outcome.docs_path.is_relative_to(site)
    assert (site / "index.html").is_file()
    assert outcome.docs_relpath and (site.parent / outcome.docs_relpath) == outcome.docs_path
    page = outcome.docs_path.read_text()
    assert "vehicle_telemetry_hour" in page
    summary = outcome.summary()
    assert json.loads(json.dumps(summary))["success"] is True
    assert summary["failed"] == [] and summary["measured"]["rows"] == len(rows)


def test_a_corrupted_hour_fails_exactly_the_rules_it_breaks(
    warehouse_service, databases, fleet_core_db
) -> None:
    db = databases("tel")
    hour = recent_hour()
    rows = clean_rows(hour)
    published = len(rows)
    teleport(rows, VEHICLES[0], at=[10, 20, 30, 40])  # 8 of 236 steps implausible
    roll_back_odometer(rows, VEHICLES[1], at=[10, 20, 30, 40, 50])  # 5 decreases
    add_ghost(rows, hour)  # a vehicle fleet-core does not know
    duplicate(rows, index=100)  # one event twice
    of_vehicle(rows, VEHICLES[3])[5]["speed_kmh"] = 400.0  # outside the validator's range
    _load(warehouse_service, db, hour, rows)
    outcome = validate_telemetry_hour(
        warehouse_service.settings,
        hour,
        expected_rows=published,
        database=db,
        fleet_core_database=fleet_core_db,
    )
    assert not outcome.success
    assert {r.rule for r in outcome.failures} == {
        "rows_match_processed",
        "vehicles_in_fleet_core",
        "ids_unique",
        "plausible_speed_between_points",
        "odometer_monotonic",
        "speed_kmh_in_range",
    }
    assert outcome.warnings == []
    assert outcome.rule("rows_match_processed").observed == published + 11
    assert outcome.rule("vehicles_in_fleet_core").observed == 10
    assert outcome.rule("ids_unique").observed == 1
    assert outcome.rule("speed_kmh_in_range").observed == 1
    assert outcome.profile["implausible_speed_steps"] == 8
    assert outcome.profile["odometer_decreases"] == 5
    assert outcome.dimensions() == {
        "consistency": False,
        "completeness": True,
        "validity": False,
        "uniqueness": False,
        "accuracy": False,
        "timeliness": True,
    }
    assert outcome.docs_path is not None and outcome.docs_path.is_file()


def test_late_data_and_wrong_units_warn_without_blocking(
    warehouse_service, databases, fleet_core_db
) -> None:
    db = databases("tel")
    hour = recent_hour()
    rows = clean_rows(hour)
    for row in rows[::4]:  # a quarter of the events waited 10 minutes at a gateway
        row["ingested_at"] = row["recorded_at"] + timedelta(minutes=10)
    for row in rows[:20]:  # a firmware reporting psi instead of kPa
        row["tire_pressure_fl_kpa"] = 33.0
    _load(warehouse_service, db, hour, rows)
    outcome = validate_telemetry_hour(
        warehouse_service.settings,
        hour,
        expected_rows=len(rows),
        database=db,
        fleet_core_database=fleet_core_db,
    )
    assert outcome.success
    assert {r.rule for r in outcome.warnings} == {"arrival_latency_p95", "tire_pressure_in_kpa"}
    assert outcome.rule("arrival_latency_p95").observed == pytest.approx(600.0)


def test_hours_validated_together_get_the_verdicts_they_get_alone(
    warehouse_service, databases, fleet_core_db
) -> None:
    db = databases("tel")
    clean, corrupted, late, empty = hours = [
        recent_hour() - timedelta(hours=n) for n in (5, 4, 3, 2)
    ]
    expected = {empty: 0}
    for hour in (clean, corrupted, late):
        rows = clean_rows(hour)
        expected[hour] = len(rows)
        if hour == corrupted:
            teleport(rows, VEHICLES[0], at=[10, 20, 30, 40])
            add_ghost(rows, hour)
        if hour == late:
            _late(rows, hour)
            for row in rows[:20]:
                row["tire_pressure_fl_kpa"] = 33.0
        _load(warehouse_service, db, hour, rows)
    settings = warehouse_service.settings
    kwargs = {"database": db, "fleet_core_database": fleet_core_db}
    together = validate_telemetry_hours(settings, hours, expected_rows=expected, **kwargs)
    assert [o.partition for o in together] == [f"{h:%Y-%m-%d-%H:%M}" for h in hours]
    assert [o.success for o in together] == [True, False, True, True]
    for hour, outcome in zip(hours, together, strict=True):
        alone = validate_telemetry_hour(settings, hour, expected_rows=expected[hour], **kwargs)
        assert {r.rule for r in outcome.failures} == {r.rule for r in alone.failures}
        assert {r.rule for r in outcome.warnings} == {r.rule for r in alone.warnings}
        assert [r.rule for r in outcome.results] == [r.rule for r in alone.results]
        for mine, theirs in zip(outcome.results, alone.results, strict=True):
            assert mine.observed == pytest.approx(theirs.observed), mine.rule
        assert outcome.profile == alone.profile
    assert {r.rule for r in together[1].failures} == {
        "rows_match_processed",
        "vehicles_in_fleet_core",
        "plausible_speed_between_points",
    }
    assert {r.rule for r in together[2].warnings} == {"arrival_latency_p95", "tire_pressure_in_kpa"}
    # One validation judged the range; the failing hour was judged again alone, on its own page.
    pages = {o.docs_path for o in together}
    assert len(pages) == 2 and all(p is not None and p.is_file() for p in pages)
    assert together[0].docs_path == together[2].docs_path == together[3].docs_path
    assert together[1].suite == "vehicle_telemetry_hour"
    assert together[0].suite == "vehicle_telemetry_hours"


def test_validation_makes_no_outbound_connection(warehouse_service, databases, monkeypatch) -> None:
    db = databases("tel")
    hour = recent_hour()
    rows = clean_rows(hour)
    _load(warehouse_service, db, hour, rows)
    seen: list[Any] = []
    real_connect = socket.socket.connect

    def connect(self, address):
        seen.append(address)
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    outcome = validate_telemetry_hour(
        warehouse_service.settings,
        hour,
        expected_rows=len(rows),
        database=db,
        fleet_core_database=None,
    )
    assert outcome.success
    remote = [
        a for a in seen if isinstance(a, tuple) and a[0] not in ("127.0.0.1", "::1", "localhost")
    ]
    assert seen and remote == []
    config = (qc.gx_dir(warehouse_service.settings) / "great_expectations.yml").read_text()
    assert "analytics_enabled: false" in config
    # The connection string is substituted at run time: no credential in the file.
    assert "${" + qc.URL_VARIABLE + "}" in config and "clickhouse+http" not in config


# --- The score ------------------------------------------------------------------------------------


# Each defect, injected alone into a clean hour, and the dimension it must lower.
def _incomplete(rows, hour):
    for row in rows[: len(rows) // 3]:
        row["environmental_conditions"] = None


def _inaccurate(rows, hour):
    teleport(rows, VEHICLES[0], at=[10, 20, 30, 40])


def _inconsistent(rows, hour):
    add_ghost(rows, hour)


def _late(rows, hour):
    for row in rows[::2]:
        row["ingested_at"] = row["recorded_at"] + timedelta(minutes=30)


def _invalid(rows, hour):
    rows[7]["heading_degrees"] = 400.0


def _duplicated(rows, hour):
    duplicate(rows, index=3)


DEFECTS = {
    "completeness": _incomplete,
    "accuracy": _inaccurate,
    "consistency": _inconsistent,
    "timeliness": _late,
    "validity": _invalid,
    "uniqueness": _duplicated,
}


def _score(warehouse_service, db: str, fleet_core_db: str, hour: datetime) -> qs.QualityScore:
    client = warehouse_service.client()
    try:
        return qs.score_telemetry_hour(
            client, hour, lake=None, database=db, fleet_core_database=fleet_core_db
        )
    finally:
        client.close()


def test_each_score_dimension_drops_when_its_defect_is_in_the_warehouse(
    warehouse_service, databases, fleet_core_db
) -> None:
    hour = recent_hour()
    clean_db = databases("tel")
    _load(warehouse_service, clean_db, hour, clean_rows(hour))
    clean = _score(warehouse_service, clean_db, fleet_core_db, hour)
    assert clean.passed and clean.score == 100, {n: d.detail for n, d in clean.dimensions.items()}
    assert set(clean.dimensions) == set(qs.th.DIMENSIONS)
    for dimension, inject in DEFECTS.items():
        db = databases("tel")
        rows = clean_rows(hour)
        inject(rows, hour)
        _load(warehouse_service, db, hour, rows)
        broken = _score(warehouse_service, db, fleet_core_db, hour)
        assert broken.failed_dimensions == [dimension], (dimension, broken.dimensions)
        assert broken.dimensions[dimension].score < 100
        assert broken.score < clean.score


def test_scores_are_stored_with_history_and_a_latest_view(warehouse_service, databases) -> None:
    ops = databases("ops")
    client = warehouse_service.client()
    try:
        first = qs.combine(
            "vehicle_telemetry",
            "2026-11-01-10:00",
            [
                qs.DimensionScore("accuracy", 90.0, False),
                qs.DimensionScore("validity", 100.0, True),
            ],
            measured_at=datetime(2026, 11, 1, 12, tzinfo=UTC),
        )
        second = qs.combine(
            "vehicle_telemetry",
            "2026-11-01-10:00",
            [
                qs.DimensionScore("accuracy", 100.0, True),
                qs.DimensionScore("validity", 100.0, True),
            ],
            measured_at=datetime(2026, 11, 1, 13, tzinfo=UTC),
            data_docs="quality/validations/x.html",
        )
        other = qs.combine(
            "vehicle_telemetry",
            "2026-11-01-11:00",
            [qs.DimensionScore("timeliness", 50.0, False)],
        )
        for s in (first, second, other):
            qs.store_score(client, s, database=ops)
        history = qs.score_history(client, "vehicle_telemetry", "2026-11-01-10:00", database=ops)
        assert [h["passed"] for h in history] == [False, True]
        assert history[0]["failed_dimensions"] == ["accuracy"]
        assert history[0]["completeness"] is None and history[0]["accuracy"] == 90.0
        assert json.loads(history[0]["details"]) == {"accuracy": {}, "validity": {}}
        latest = client.query(
            f"SELECT partition, score, passed, accuracy, timeliness, data_docs, measurements "
            f"FROM {ops}.{qs.LATEST_VIEW} ORDER BY partition"
        ).result_rows
        assert latest == [
            ("2026-11-01-10:00", 100.0, True, 100.0, None, "quality/validations/x.html", 2),
            ("2026-11-01-11:00", 50.0, False, None, 50.0, "", 1),
        ]
    finally:
        client.close()


# --- Fleet-core and marts -----------------------------------------------------------------------


def test_fleet_core_references_are_checked_across_tables(warehouse_service, databases) -> None:
    db = databases("fc")
    client = warehouse_service.client()
    org, fleet, retired = (str(uuid.uuid4()) for _ in range(3))
    try:
        for t in ("organizations", "fleets", "vehicles"):
            for statement in clickhouse_ddl(t, db):
                client.command(statement)
        _insert_entity(
            client,
            db,
            "organizations",
            organization_id=org,
            name="o",
            sector="logistics",
            is_active=True,
        )
        for f in (fleet, retired):
            _insert_entity(
                client, db, "fleets", fleet_id=f, organization_id=org, name="f", sector="logistics"
            )
        # The retired fleet was soft-deleted later (a newer version with _is_deleted).
        _insert_entity(
            client,
            db,
            "fleets",
            deleted=True,
            version=2,
            fleet_id=retired,
            organization_id=org,
            name="f",
            sector="logistics",
        )
        vehicles = {
            str(uuid.uuid4()): fleet,
            str(uuid.uuid4()): retired,  # points at a deleted fleet: warning
            str(uuid.uuid4()): str(uuid.uuid4()),  # points at a fleet never extracted: failure
        }
        for i, (vehicle, f) in enumerate(vehicles.items()):
            _insert_entity(
                client,
                db,
                "vehicles",
                vehicle_id=vehicle,
                fleet_id=f,
                asset_tag=f"A{i}",
                serial_number=f"S{i}",
                manufacturer="m",
                model="x",
                vehicle_profile="{}",
            )
    finally:
        client.close()
    outcomes = {
        o.dataset: o
        for o in validate_fleet_core(
            warehouse_service.settings, ["organizations", "fleets", "vehicles"], database=db
        )
    }
    assert outcomes["fleet_core.organizations"].success
    assert outcomes["fleet_core.fleets"].success
    vehicles_outcome = outcomes["fleet_core.vehicles"]
    assert not vehicles_outcome.success
    assert [r.rule for r in vehicles_outcome.failures] == ["fleet_id_exists"]
    assert vehicles_outcome.rule("fleet_id_exists").observed == 1
    assert [r.rule for r in vehicles_outcome.warnings] == ["fleet_id_not_deleted"]
    score = qs.score_validation(vehicles_outcome)
    assert score.failed_dimensions == ["consistency"] and score.score < 100
    assert all(o.docs_path and o.docs_path.is_file() for o in outcomes.values())


def _mart_tables(client, marts_db: str) -> None:
    client.command(
        f"CREATE TABLE {marts_db}.fct_vehicle_days (organization_id UUID, fleet_id UUID, "
        "vehicle_id UUID, activity_date Date, telemetry_points UInt64, distance_km Float64, "
        "driving_hours Float64, stops UInt64, last_operational_status String) "
        "ENGINE = MergeTree ORDER BY (vehicle_id, activity_date)"
    )
    client.command(f"CREATE TABLE {marts_db}.dim_vehicles (vehicle_id UUID) ENGINE = Memory")
    client.insert(f"{marts_db}.dim_vehicles", [[v] for v in VEHICLES], column_names=["vehicle_id"])


def _vehicle_day(vehicle: str, day: date, points: int, status: str = "parked") -> list[Any]:
    return [VEHICLES[0], VEHICLES[1], vehicle, day, points, 36.0, 1.0, 2, status]


def test_a_mart_day_is_checked_against_the_day_before_and_its_source(
    warehouse_service, databases
) -> None:
    tel, marts_db = databases("tel"), databases("marts")
    hour = recent_hour()
    day = hour.date()
    rows = clean_rows(hour)
    _load(warehouse_service, tel, hour, rows)
    client = warehouse_service.client()
    try:
        _mart_tables(client, marts_db)
        before = [_vehicle_day(v, day - timedelta(days=1), 0) for v in VEHICLES]
        today = [_vehicle_day(v, day, len(of_vehicle(rows, v))) for v in VEHICLES]
        # The next day lost three vehicles and claims points the hot path does not hold.
        after = [_vehicle_day(VEHICLES[0], day + timedelta(days=1), 7, status="flying")]
        client.insert(f"{marts_db}.fct_vehicle_days", before + today + after)
    finally:
        client.close()
    settings = warehouse_service.settings
    good = validate_mart(
        settings, "fct_vehicle_days", day, database=marts_db, telemetry_database=tel
    )
    assert good.success, [r.describe() for r in good.failures]
    assert good.rule("row_count_vs_previous_period").observed == 4
    bad = validate_mart(
        settings,
        "fct_vehicle_days",
        day + timedelta(days=1),
        database=marts_db,
        telemetry_database=tel,
    )
    assert {r.rule for r in bad.failures} == {
        "row_count_vs_previous_period",
        "telemetry_points_match_hot_path",
        "last_operational_status_accepted",
    }
    assert marts.row_count_bounds(4) == (2, 7)


# --- On the simulated fleet (what the real pipeline produced) -----------------------------------


def test_the_gate_and_score_on_a_simulated_hour(simulated_fleet) -> None:
    settings = simulated_fleet.warehouse.settings
    client = simulated_fleet.warehouse.client()
    try:
        hour = (
            client.query(
                f"SELECT hour FROM {simulated_fleet.telemetry_database}.telemetry_loads_latest "
                "ORDER BY rows DESC LIMIT 1"
            )
            .result_rows[0][0]
            .replace(tzinfo=UTC)
        )
        outcome = validate_telemetry_hour(
            settings,
            hour,
            lake=simulated_fleet.lake,
            database=simulated_fleet.telemetry_database,
            fleet_core_database=simulated_fleet.fleet_core_database,
            client=client,
        )
        assert outcome.success, [r.describe() for r in outcome.failures]
        score = qs.score_telemetry_hour(
            client,
            hour,
            lake=simulated_fleet.lake,
            database=simulated_fleet.telemetry_database,
            fleet_core_database=simulated_fleet.fleet_core_database,
            validation=outcome,
        )
    finally:
        client.close()
    dims = score.dimensions
    # Hot path, Parquet and load log agree; every vehicle is in fleet-core.
    assert dims["consistency"].passed and dims["consistency"].score == 100
    # The simulator injects faults: the hour's deliveries had dead letters and duplicates.
    assert dims["validity"].detail["dead_lettered"] > 0 and dims["validity"].score < 100
    assert dims["uniqueness"].detail["duplicates"] >= 0
    # The fleet ran days ago and was loaded now: not queryable in time, as it should say.
    assert dims["timeliness"].detail["queryable_on_time_share"] == 0
    assert score.data_docs == outcome.docs_relpath


def test_fleet_core_suites_pass_on_the_simulated_extract(simulated_fleet) -> None:
    outcomes = validate_fleet_core(
        simulated_fleet.warehouse.settings, database=simulated_fleet.fleet_core_database
    )
    assert len(outcomes) == 13
    assert all(o.success for o in outcomes), {
        o.dataset: [r.describe() for r in o.failures] for o in outcomes if not o.success
    }


def test_a_check_whose_query_fails_fails_the_gate(warehouse_service, databases) -> None:
    db = databases("fc")
    client = warehouse_service.client()
    try:
        # Trips extracted, but neither vehicles nor routes: the reference checks cannot run.
        for statement in clickhouse_ddl("trips", db):
            client.command(statement)
        _insert_entity(
            client,
            db,
            "trips",
            trip_id=str(uuid.uuid4()),
            vehicle_id=str(uuid.uuid4()),
            route_id=str(uuid.uuid4()),
            mission_type="delivery",
            status="scheduled",
        )
    finally:
        client.close()
    (outcome,) = validate_fleet_core(warehouse_service.settings, ["trips"], database=db)
    assert not outcome.success
    assert {r.rule for r in outcome.failures} == {"vehicle_id_exists", "route_id_exists"}
    assert all("UNKNOWN_TABLE" in (r.error or "") for r in outcome.failures)
    assert outcome.rule("key_unique").success
