"""The fleet simulator end to end: landing files, fleet-core rows (SQLite and PostgreSQL), truth."""

from __future__ import annotations

import gzip
import math
import re
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import polars as pl
import pytest
from typer.testing import CliRunner

from atlasmesh.fleet_core.store import FleetCoreStore
from atlasmesh.lake import Lake
from atlasmesh.simulator import SimConfig, simulate
from atlasmesh.telemetry.reasons import Disposition, FaultClass

pytestmark = pytest.mark.integration

START = datetime(2026, 10, 1, tzinfo=UTC)
_PATH = re.compile(
    r"^landing/telemetry/schema=v(\d)/date=(\d{4}-\d{2}-\d{2})/hour=(\d{2})/"
    r"(gw-[a-z0-9-]+)-(\d{8}T\d{4})\.jsonl\.gz$"
)
WIRE_KEYS_V1 = {
    "telemetry_id", "vehicle_id", "recorded_at", "schema_version", "location", "speed_kmh",
    "heading_degrees", "battery_level_percent", "fuel_level_percent", "sensor_readings",
    "diagnostic_codes", "environmental_conditions", "operational_status", "custom_data",
}  # fmt: skip
WIRE_KEYS_V2 = (WIRE_KEYS_V1 - {"heading_degrees"}) | {
    "heading_deg",
    "odometer_km",
    "firmware_version",
}


def _run(tmp: Path, url: str, **overrides: object):
    params = {"seed": 5, "vehicles": 8, "days": 1.0, "start": START, "interval_s": 120.0}
    params.update(overrides)
    config = SimConfig(**params)  # type: ignore[arg-type]
    with FleetCoreStore(url) as store:
        summary = simulate(
            config, lake=Lake(f"file://{tmp / 'lake'}"), store=store, truth_dir=tmp / "truth"
        )
    return config, summary


def _files(tmp: Path) -> dict[str, bytes]:
    root = tmp / "lake"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.gz"))}


def _records(tmp: Path) -> list[tuple[str, bytes, dict]]:
    """Every complete, parseable object line of the landing zone: (file, raw line, object)."""
    rows = []
    for rel, data in _files(tmp).items():
        text = zlib.decompressobj(wbits=31).decompress(data)
        for line in text.split(b"\n")[:-1]:
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                rows.append((rel, line, obj))
    return rows


def _truth(summary, table: str) -> pl.DataFrame:
    return pl.read_parquet(summary.ground_truth_dir / f"{table}.parquet")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    """One mid-sized run on SQLite shared by the read-only checks."""
    tmp = tmp_path_factory.mktemp("sim")
    config, summary = _run(
        tmp,
        f"sqlite:///{tmp / 'fleet_core.db'}",
        vehicles=12,
        days=1.0,
        interval_s=30.0,
        fault_rate=0.05,
        firmware_update_share=0.5,
    )
    return tmp, config, summary


def test_run_fills_landing_fleet_core_and_truth(tmp_path: Path, fleet_core_url: str) -> None:
    config, summary = _run(tmp_path, fleet_core_url)
    files = _files(tmp_path)
    assert files and all(_PATH.match(rel) for rel in files)
    assert summary.events == config.vehicles * config.steps
    with FleetCoreStore(fleet_core_url, migrate=False) as store:
        counts = store.row_counts()
        vehicles = store.read("vehicles")
        decisions = store.read("policy_decisions")
    assert counts["organizations"] >= 1 and counts["vehicles"] == config.vehicles
    assert counts["trips"] > 0 and counts["policy_decisions"] > 0 and counts["vehicle_commands"] > 0
    assert {d["decision"] for d in decisions} <= {"ALLOW", "DENY"}
    assert all(v["last_seen"] is not None and v["current_status"] != "offline" for v in vehicles)
    # Every row's timestamps are simulated ones, never the wall clock of the test run.
    assert all(START - timedelta(days=500) <= v["updated_at"] <= config.end for v in vehicles)
    for name in ("faults", "health", "failures", "vehicles"):
        assert (summary.ground_truth_dir / f"{name}.parquet").exists()
    known = {v["vehicle_id"] for v in vehicles}
    unknown = _truth(summary, "faults").filter(pl.col("fault_class") == FaultClass.UNKNOWN_VEHICLE)
    strays = {
        o["telemetry_id"] for _, _, o in _records(tmp_path) if o.get("vehicle_id") not in known
    }
    assert strays <= set(unknown["telemetry_id"])


def test_same_seed_gives_same_bytes_rows_and_truth(tmp_path: Path) -> None:
    runs = []
    for name in ("a", "b"):
        tmp = tmp_path / name
        _, summary = _run(tmp, f"sqlite:///{tmp / 'fc.db'}", fault_rate=0.05)
        with FleetCoreStore(f"sqlite:///{tmp / 'fc.db'}", migrate=False) as store:
            rows = {t: store.read(t) for t in store.tables() if t != "schema_migrations"}
        truth = {p.name: p.read_bytes() for p in sorted(summary.ground_truth_dir.iterdir())}
        runs.append((_files(tmp), rows, truth, summary.landing_digest))
    (files_a, rows_a, truth_a, digest_a), (files_b, rows_b, truth_b, digest_b) = runs
    assert files_a == files_b and digest_a == digest_b
    assert rows_a == rows_b
    assert truth_a == truth_b
    # gzip headers carry no timestamp or file name.
    assert all(data[4:8] == b"\0\0\0\0" and not data[3] & 0x08 for data in files_a.values())
    _, other = _run(
        tmp_path / "c", f"sqlite:///{tmp_path / 'c' / 'fc.db'}", seed=6, fault_rate=0.05
    )
    assert other.landing_digest != digest_a


def test_daily_windows_are_slices_of_one_continuous_history(tmp_path: Path) -> None:
    """Two one-day runs with a shared origin write what one two-day run writes, id for id."""
    common = {
        "days": 1.0,
        "origin": START,
        "firmware_update": START + timedelta(hours=30),
        "fault_rate": 0.05,
    }
    whole_dir, parts_dir = tmp_path / "whole", tmp_path / "parts"
    _run(whole_dir, f"sqlite:///{whole_dir / 'fc.db'}", **{**common, "days": 2.0})
    url = f"sqlite:///{parts_dir / 'fc.db'}"
    _run(parts_dir, url, **common)
    _run(parts_dir, url, **common, start=START + timedelta(days=1))
    assert _files(whole_dir) == _files(parts_dir)
    with (
        FleetCoreStore(f"sqlite:///{whole_dir / 'fc.db'}", migrate=False) as a,
        FleetCoreStore(url, migrate=False) as b,
    ):
        for table in a.tables():
            assert a.read(table) == b.read(table), table
    ids = [o.get("telemetry_id") for _, _, o in _records(parts_dir)]
    assert len(ids) > 2 * 8 * 700


def test_fault_rates_within_tolerance(demo) -> None:
    _, config, summary = demo
    faults = _truth(summary, "faults")
    # Events of the last hours may still sit in a gateway (late, re-sent) when the run ends.
    cutoff = config.end - timedelta(hours=7)
    recorded = config.vehicles * int((cutoff - config.start).total_seconds() // config.interval_s)
    injected = faults.filter(
        ~pl.col("detail").str.starts_with("re-delivered") & (pl.col("recorded_at") < cutoff)
    )
    counts = dict(injected.group_by("fault_class").len().iter_rows())
    counts[FaultClass.TRUNCATED_FILE.value] = faults.filter(
        pl.col("fault_class") == FaultClass.TRUNCATED_FILE
    ).height
    for fault, rate in config.line_fault_rates.items():
        expected = rate * recorded
        # Four binomial standard deviations: fails on a wrong rate, not on chance.
        assert abs(counts.get(fault.value, 0) - expected) <= 4 * math.sqrt(expected) + 2, fault
    truncated = counts.get(FaultClass.TRUNCATED_FILE.value, 0)
    expected_files = config.file_fault_rate * summary.files
    assert abs(truncated - expected_files) <= 4 * math.sqrt(expected_files) + 2
    assert set(faults["disposition"]) <= {d.value for d in Disposition}


def test_every_fault_lands_where_its_class_says(tmp_path: Path) -> None:
    """The validator, run on the landing zone, gives each faulty line its truth class."""
    from atlasmesh.telemetry.validate import LandingFile, validate_files

    tmp = tmp_path
    _, summary = _run(
        tmp,
        f"sqlite:///{tmp / 'fleet_core.db'}",
        vehicles=4,
        days=0.5,
        interval_s=60.0,
        fault_rate=0.15,
    )
    root = tmp / "lake"
    files = sorted(
        (LandingFile.from_path(str(p)) for p in root.rglob("*.jsonl.gz")),
        key=lambda f: (f.arrival_time, f.path),
    )
    with FleetCoreStore(f"sqlite:///{tmp / 'fleet_core.db'}", migrate=False) as store:
        known = [v["vehicle_id"] for v in store.read("vehicles")]
    dead, duplicates = {}, 0
    for result in validate_files(files, known_vehicles=known):
        duplicates += result.duplicates
        for row in result.dead_letters.select(
            ["source_file", "line_number", "reason_code"]
        ).to_pylist():
            dead[(str(Path(row["source_file"]).relative_to(root)), row["line_number"])] = row[
                "reason_code"
            ]
    faults = _truth(summary, "faults")
    expected = {
        (r["file"], r["line"]): r["fault_class"]
        for r in faults.filter(pl.col("disposition") == Disposition.DEAD_LETTER).iter_rows(
            named=True
        )
    }
    assert dead == expected
    assert duplicates == faults.filter(pl.col("disposition") == Disposition.DUPLICATE).height


def test_truth_stays_out_of_landing_and_fleet_core(demo) -> None:
    tmp, _, summary = demo
    assert not summary.ground_truth_dir.is_relative_to(tmp / "lake")
    records = _records(tmp)
    for _, _, obj in records:
        assert set(obj) <= WIRE_KEYS_V1 | WIRE_KEYS_V2
        assert set(obj.get("custom_data") or {}) <= {"gateway_id", "note", "debug_dump"}
    blob = b"\n".join(raw for _, raw, _ in records).lower()
    for word in ("health", "fault", "ground_truth", "wear_per", "dtc_below"):
        assert word.encode() not in blob
    with FleetCoreStore(f"sqlite:///{tmp / 'fleet_core.db'}", migrate=False) as store:
        for table in store.tables():
            assert not any(
                w in c for c in store.columns(table) for w in ("health", "fault", "wear")
            ), table
            text = orjson.dumps(store.read(table), default=str).decode().lower()
            assert "health" not in text and "ground_truth" not in text, table
            assert not any(f'"{f.value.lower()}"' in text for f in FaultClass), table


def test_late_events_sit_in_later_folders_and_v2_firmware_appears(demo) -> None:
    _, _, summary = demo
    faults = _truth(summary, "faults")
    late = faults.filter(pl.col("fault_class") == FaultClass.LATE_ARRIVAL)
    assert late.height > 0
    for row in late.iter_rows(named=True):
        folder_hour = datetime.strptime(
            "".join(_PATH.match(row["file"]).group(2, 3)), "%Y-%m-%d%H"
        ).replace(tzinfo=UTC)
        assert folder_hour > row["recorded_at"].replace(minute=0, second=0, microsecond=0)
    tmp = summary.ground_truth_dir.parent.parent
    faulty = set(faults["telemetry_id"].drop_nulls())
    v2 = [
        o for f, _, o in _records(tmp) if "schema=v2/" in f and o.get("telemetry_id") not in faulty
    ]
    assert v2
    assert all(
        {"odometer_km", "firmware_version", "heading_deg"} <= set(o) and "heading_degrees" not in o
        for o in v2
    )
    odometer = pl.DataFrame(
        [
            {"vehicle_id": o["vehicle_id"], "at": o["recorded_at"], "km": o["odometer_km"]}
            for o in v2
        ]
    ).sort("vehicle_id", "at")
    assert (
        odometer.group_by("vehicle_id")
        .agg((pl.col("km").diff().fill_null(0) >= 0).all())["km"]
        .all()
    )


def test_degradation_precedes_failures(tmp_path: Path) -> None:
    """Before each failure the component's sensor has drifted and its DTC is reported."""
    url = f"sqlite:///{tmp_path / 'fc.db'}"
    _, summary = _run(
        tmp_path, url, vehicles=8, days=6.0, interval_s=180.0, fault_rate=0.0, wear_factor=6.0
    )
    failures = _truth(summary, "failures")
    assert failures.height >= 5
    by_vehicle: dict[str, list[tuple[datetime, dict]]] = {}
    for _, _, o in _records(tmp_path):
        at = datetime.strptime(o["recorded_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        by_vehicle.setdefault(o["vehicle_id"], []).append((at, o))
    compared = drifted = 0
    for failure in failures.iter_rows(named=True):
        t, component = failure["failed_at"], failure["component"]
        mine = [(at, o) for at, o in by_vehicle[failure["vehicle_id"]] if at < t]
        before = [(at, o) for at, o in mine if at >= t - timedelta(hours=24)]
        early = [(at, o) for at, o in mine if t - timedelta(days=5) <= at < t - timedelta(days=3)]
        # The DTC of the wearing part is reported in the day before it fails.
        assert any(o["diagnostic_codes"] for _, o in before), failure
        late_values = [x for _, o in before if (x := _indicator(component, o)) is not None]
        early_values = [x for _, o in early if (x := _indicator(component, o)) is not None]
        if len(late_values) >= 5 and len(early_values) >= 5:
            compared += 1
            drifted += sum(late_values) / len(late_values) > sum(early_values) / len(early_values)
    assert compared >= 3 and drifted >= 0.8 * compared


def _indicator(component: str, obj: dict) -> float | None:
    """A reading that grows as the component wears, or None when the sample cannot show it."""
    s, status = obj["sensor_readings"], obj["operational_status"]
    if component == "brakes":
        return -s["brake_pad_mm"] if "brake_pad_mm" in s else None
    if component == "tires":
        tires = [v for k, v in s.items() if k.startswith("tire_pressure")]
        return -min(tires) / max(tires) if tires else None
    if component == "cooling":
        temp = s.get("motor_temp_c", s.get("engine_temp_c"))
        return (
            temp - obj["environmental_conditions"]["ambient_temp_c"]
            if status == "driving"
            else None
        )
    if component == "aux_battery":
        return -s["aux_battery_v"] if status == "parked" else None
    return (
        s["vibration_rms_g"] / (0.04 + 0.0025 * obj["speed_kmh"]) if status == "driving" else None
    )


def test_cli_simulates_into_atlasmesh_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from atlasmesh.cli import app

    monkeypatch.setenv("ATLASMESH_HOME", str(tmp_path))
    args = [
        "simulate",
        "--seed",
        "3",
        "--vehicles",
        "3",
        "--days",
        "0.05",
        "--start",
        "2026-10-01T08:00:00Z",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert list((tmp_path / "lake" / "landing" / "telemetry").rglob("*.jsonl.gz"))
    assert len(list((tmp_path / "simulator" / "ground_truth").iterdir())) == 1
    again = CliRunner().invoke(app, [*args, "--reset"])
    assert again.exit_code == 0, again.output
    # Another world in the same fleet-core (same seed, other size): refused as a whole, with
    # the way out, and the database keeps exactly what it held.
    with FleetCoreStore(f"sqlite:///{tmp_path / 'fleet_core.db'}") as store:
        held = store.row_counts()
    clash = CliRunner().invoke(app, [*args[:4], "2", *args[5:]])
    assert clash.exit_code == 1 and "--reset" in clash.output, clash.output
    with FleetCoreStore(f"sqlite:///{tmp_path / 'fleet_core.db'}") as store:
        assert store.row_counts() == held
    bad = CliRunner().invoke(app, ["simulate", "--vehicles", "0"])
    assert bad.exit_code == 2 and "vehicles must be" in bad.output
    assert gzip.decompress(next((tmp_path / "lake").rglob("*.gz")).read_bytes())
