"""Hostile landing bytes: tiny lines in bounded blocks, integers beyond a double."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime

import pytest

from atlasmesh.telemetry import policy
from atlasmesh.telemetry.validate import (
    LandingFile,
    iter_validate,
    validate_batch,
    validate_file_groups,
)

ARRIVAL = datetime(2026, 11, 28, 10, 5, tzinfo=UTC)
# Empty lines, tiny objects and a last line without its newline, cut at every offset.
TINY = b"\n{}\n[]\n1\n\n" * 7 + b"{}"


def _decisions(tables) -> list[tuple[int, str]]:
    return [(row["line_number"], row["reason_code"]) for t in tables for row in t.to_pylist()]


def test_a_file_of_tiny_lines_is_validated_in_blocks_of_block_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = gzip.compress(TINY)
    whole = validate_batch(data, source_file="f", arrival_time=ARRIVAL, schema_folder="v1")
    monkeypatch.setattr(policy, "BLOCK_LINES", 4)
    parts = list(iter_validate(data, source_file="f", arrival_time=ARRIVAL, schema_folder="v1"))
    assert len(parts) == 9  # 36 lines, 4 a block
    assert all(p.received <= 4 for p in parts)
    assert sum(p.received for p in parts) == whole.received == 36
    assert _decisions(p.dead_letters for p in parts) == _decisions([whole.dead_letters])


def test_small_files_of_tiny_lines_form_windows_bounded_in_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(policy, "BLOCK_LINES", 10)
    files = [
        LandingFile(f"f{i}", ARRIVAL, lambda: gzip.compress(b"{}\n" * 4), "v1") for i in range(6)
    ]
    groups = list(validate_file_groups(files))
    assert [len(g.results) for g in groups] == [2, 2, 2]
    assert all(g.dead_letters.num_rows <= 10 for g in groups)
    assert sum(r.received for g in groups for r in g.results) == 24


@pytest.mark.parametrize("digits", [309, 400, 5000])
@pytest.mark.parametrize("field", ["speed_kmh", "custom_data"])
def test_an_integer_overflowing_a_double_is_non_finite(digits: int, field: str) -> None:
    token = b"9" * digits
    line = (
        b'{"telemetry_id":"59c054ed-e50d-4b72-9562-0fc75e33e9be",'
        b'"vehicle_id":"288690c4-dbd2-4890-acea-e94e3c9e35dc",'
        b'"recorded_at":"2026-11-28T09:55:00.415Z","schema_version":"1.0.0",'
        b'"location":{"lat":48.1,"lon":11.6},"speed_kmh":'
        + (token if field == "speed_kmh" else b"1.0")
        + b',"heading_degrees":46.7,"battery_level_percent":null,"fuel_level_percent":72.9,'
        b'"sensor_readings":{},"diagnostic_codes":[],"operational_status":"idle",'
        b'"custom_data":{"n":' + (token if field == "custom_data" else b"1") + b"}}\n"
    )
    res = validate_batch(line, source_file="f", arrival_time=ARRIVAL, schema_folder="v1")
    assert res.dead_letters.column("reason_code").to_pylist() == ["NON_FINITE"]
    path = "speed_kmh" if field == "speed_kmh" else "custom_data.n"
    assert res.dead_letters.column("reason_detail")[0].as_py() == (
        f"{path} is Infinity: numbers must be finite"
    )


def test_a_large_but_finite_integer_is_judged_by_its_value() -> None:
    line = (
        b'{"telemetry_id":"59c054ed-e50d-4b72-9562-0fc75e33e9be",'
        b'"vehicle_id":"288690c4-dbd2-4890-acea-e94e3c9e35dc",'
        b'"recorded_at":"2026-11-28T09:55:00.415Z","schema_version":"1.0.0",'
        b'"location":{"lat":48.1,"lon":11.6},"speed_kmh":1' + b"0" * 25 + b","
        b'"heading_degrees":46.7,"battery_level_percent":null,"fuel_level_percent":72.9,'
        b'"sensor_readings":{},"diagnostic_codes":[],"operational_status":"idle"}\n'
    )
    res = validate_batch(line, source_file="f", arrival_time=ARRIVAL, schema_folder="v1")
    assert res.dead_letters.column("reason_code").to_pylist() == ["OUT_OF_RANGE"]
