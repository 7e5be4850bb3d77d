"""Hostile landing layouts: every landing file is staged, reported or noted; none stops ingestion."""

from __future__ import annotations

import gzip
import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from atlasmesh.lake import Lake
from atlasmesh.telemetry import pipeline
from atlasmesh.telemetry.pipeline import list_arrival_hours, stage_arrival_hour
from orchestration.resources import LakeResource
from orchestration.sensors import new_landing_files

pytestmark = pytest.mark.integration

HOUR = datetime(2026, 11, 28, 10, tzinfo=UTC)
VEHICLE = "288690c4-dbd2-4890-acea-e94e3c9e35dc"
DAY = "landing/telemetry/schema=v1/date=2026-11-28"


def _event(minute: int) -> bytes:
    record = {
        "telemetry_id": str(uuid.uuid4()),
        "vehicle_id": VEHICLE,
        "recorded_at": f"2026-11-28T09:{minute:02d}:00.000Z",
        "schema_version": "1.0.0",
        "location": {"lat": 48.1, "lon": 11.6},
        "speed_kmh": 10.0,
        "heading_degrees": 90.0,
        "battery_level_percent": None,
        "fuel_level_percent": 50.0,
        "sensor_readings": {"engine_temp_c": 90.0},
        "diagnostic_codes": [],
        "operational_status": "driving",
    }
    return json.dumps(record).encode() + b"\n"


def _batch(lines: int = 3) -> bytes:
    return gzip.compress(b"".join(_event(m) for m in range(lines)), mtime=0)


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake(f"file://{tmp_path / 'lake'}")


MISPLACED = [
    "landing/telemetry/gw-a-20261128T1000.jsonl.gz",
    "landing/telemetry/schema=v1/gw-b-20261128T1000.jsonl.gz",
    "landing/telemetry/schema=v1/date=2026-02-30/hour=10/gw-c-20260230T1000.jsonl.gz",
    f"{DAY}/gw-d-20261128T1000.jsonl.gz",
    f"{DAY}/hour=24/gw-e-20261128T2400.jsonl.gz",
    f"{DAY}/hour=7/gw-f-20261128T0700.jsonl.gz",
    f"{DAY}/hour=10/gw-g-20261128T1000.jsonl.gz/inner.jsonl.gz",
]


def test_discovery_reports_misplaced_files_once_instead_of_failing(lake: Lake) -> None:
    good = f"{DAY}/hour=10/gw-ok-20261128T1000.jsonl.gz"
    for rel in [good, *MISPLACED]:
        lake.write_bytes(rel, _batch())
    changes = list_arrival_hours(lake)
    assert [e.path for e in changes.files] == [good]
    assert changes.arrival_hours == [HOUR]
    reported = {e.path: why for e, why in changes.misplaced}
    assert sorted(reported) == sorted(MISPLACED)
    assert "hour=HH" in reported[f"{DAY}/hour=7/gw-f-20261128T0700.jsonl.gz"]
    assert "real day" in reported[MISPLACED[2]]
    again = list_arrival_hours(lake, changes.cursor)
    assert (again.files, again.misplaced) == ([], [])
    assert pipeline.hour_of_path("x/date=2026-02-30/hour=10/y") is None
    assert pipeline.hour_of_path("x/date=2026-11-28/hour=24/y") is None


def test_the_sensor_warns_about_misplaced_files_and_still_requests_the_good_hours(
    lake: Lake, capfd: pytest.CaptureFixture[str]
) -> None:
    lake.write_bytes(f"{DAY}/hour=10/gw-ok-20261128T1000.jsonl.gz", _batch())
    lake.write_bytes(MISPLACED[2], _batch())
    resources = {"lake": LakeResource(url=lake.root)}
    with dg.build_sensor_context(resources=resources) as context:
        result = new_landing_files(context)
    assert [r.partition_key for r in result.run_requests] == ["2026-11-28-10:00"]
    # The sensor's log goes to the tick's log (stderr here), once per new file.
    assert f"landing file {MISPLACED[2]} is not ingested" in capfd.readouterr().err


def test_a_file_gone_when_read_is_noted_and_the_rest_of_the_hour_is_staged(lake: Lake) -> None:
    lake.write_bytes(f"{DAY}/hour=10/gw-ok-20261128T1000.jsonl.gz", _batch(4))
    gone = f"{DAY}/hour=10/gw-gone-20261128T1001.jsonl.gz"
    os.symlink("/nonexistent/batch.jsonl.gz", lake.path(gone))
    result = stage_arrival_hour(lake, HOUR, known_vehicles=[VEHICLE])
    result.check()
    assert (result.received, result.staged) == (4, 4)
    assert result.unreadable_files == [gone]
    assert gone not in result.empty_files
    assert any(n.startswith(gone) and "gone when read" in n for n in result.notes)
    assert pipeline.read_stage_manifest(lake, HOUR).unreadable_files == [gone]
    assert result.metadata()["unreadable_files"] == 1


def test_a_folder_in_the_hour_folder_is_noted(lake: Lake) -> None:
    lake.write_bytes(f"{DAY}/hour=10/gw-ok-20261128T1000.jsonl.gz", _batch())
    lake.write_bytes(f"{DAY}/hour=10/gw-dir-20261128T1001.jsonl.gz/inner.jsonl.gz", _batch())
    result = stage_arrival_hour(lake, HOUR, known_vehicles=[VEHICLE])
    assert result.received == 3
    assert any("gw-dir-20261128T1001.jsonl.gz: a folder, not read" in n for n in result.notes)


@pytest.mark.parametrize(
    "name", ["gw-x-20261128T1009.json.gz", "gw-x-20261128T1009.JSONL.GZ", "gw-x-20261128T1009.gz"]
)
def test_a_name_with_another_extension_keeps_its_arrival_minute(lake: Lake, name: str) -> None:
    lake.write_bytes(f"{DAY}/hour=10/{name}", _batch())
    result = stage_arrival_hour(lake, HOUR, known_vehicles=[VEHICLE])
    assert result.staged == 3
    staged = pq.read_table(lake.path(pipeline.staged_path(HOUR.replace(hour=9), HOUR)))
    assert set(staged.column("ingested_at").to_pylist()) == {HOUR.replace(minute=9)}
    assert any("does not end in .jsonl.gz" in n for n in result.notes)


def test_a_name_that_is_not_utf8_is_reported_not_fatal(lake: Lake) -> None:
    lake.write_bytes(f"{DAY}/hour=10/gw-ok-20261128T1000.jsonl.gz", _batch())
    folder = os.fsencode(lake.path(f"{DAY}/hour=10"))
    Path(os.fsdecode(folder + b"/gw-\xff-20261128T1001.jsonl.gz")).write_bytes(_batch())
    changes = list_arrival_hours(lake)
    assert changes.arrival_hours == [HOUR]
    [(bad, why)] = changes.misplaced
    assert "not valid UTF-8" in why
    assert pipeline.printable_path(bad.path).endswith("gw-\\xff-20261128T1001.jsonl.gz")
    result = stage_arrival_hour(lake, HOUR, known_vehicles=[VEHICLE])
    assert result.received == 3
    assert any("gw-\\xff-20261128T1001.jsonl.gz: not read" in n for n in result.notes)
    assert pipeline.is_staged(lake, HOUR)


def test_folder_names_are_taken_literally_not_as_glob_patterns(lake: Lake) -> None:
    odd_schema = "landing/telemetry/schema=v[1]/date=2026-11-28/hour=10/gw-a-20261128T1000.jsonl.gz"
    lake.write_bytes(odd_schema, _batch())
    lake.write_bytes(
        "landing/telemetry/schema=v1/date=*/hour=10/gw-b-20261128T1000.jsonl.gz", _batch()
    )
    lake.write_bytes(f"{DAY}/hour=1?/gw-c-20261128T1000.jsonl.gz", _batch())
    lake.write_bytes(f"{DAY}/hour=11/gw-d-20261128T1100.jsonl.gz", _batch())
    changes = list_arrival_hours(lake)
    assert sorted(e.path for e in changes.files) == sorted(
        [odd_schema, f"{DAY}/hour=11/gw-d-20261128T1100.jsonl.gz"]
    )
    assert sorted(e.path.split("/")[3] for e, _ in changes.misplaced) == [
        "date=*",
        "date=2026-11-28",
    ]
    assert len(changes.misplaced) == 2
