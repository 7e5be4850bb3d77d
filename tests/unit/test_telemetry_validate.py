"""Column-wise telemetry validation: every hostile input gets its reason and nothing is lost."""

from __future__ import annotations

import base64
import copy
import gzip
import json
import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from atlasmesh.telemetry import policy, validate
from atlasmesh.telemetry.reasons import FaultClass
from atlasmesh.telemetry.registry import PROCESSED_SCHEMA
from atlasmesh.telemetry.validate import (
    DLQ_SCHEMA,
    BatchResult,
    Deduplicator,
    LandingFile,
    arrival_time_from_path,
    partition_path,
    split_by_event_hour,
    validate_batch,
    validate_files,
)

ARRIVAL = datetime(2026, 11, 1, 12, 7, tzinfo=UTC)
VEHICLES = [str(uuid.UUID(int=i + 1, version=4)) for i in range(5)]
_RNG = random.Random(7)


def _ts(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def event(n: int = 0, version: str = "1.0.0", **overrides: Any) -> dict[str, Any]:
    """A valid telemetry event; n varies ids, time and values."""
    recorded = ARRIVAL - timedelta(minutes=2, seconds=n)
    ev: dict[str, Any] = {
        "telemetry_id": str(uuid.UUID(int=10_000 + n, version=4)),
        "vehicle_id": VEHICLES[n % len(VEHICLES)],
        "recorded_at": _ts(recorded),
        "schema_version": version,
        "location": {"lat": 24.45 + n / 1000, "lon": 54.38},
        "speed_kmh": 40.0 + n % 50,
        "heading_degrees": float(n % 360),
        "battery_level_percent": 80.5,
        "fuel_level_percent": None,
        "sensor_readings": {
            "motor_temp_c": 61.5,
            "battery_temp_c": 30.1,
            "tire_pressure_fl_kpa": 231.0,
            "vibration_rms_g": 0.2,
            "brake_pad_mm": 7.5,
        },
        "diagnostic_codes": ["P0A80"] if n % 7 == 0 else [],
        "environmental_conditions": {"ambient_temp_c": 33.0, "precipitation": "none"},
        "operational_status": "driving",
        "custom_data": {"gateway_id": "gw-1", "note": "ok"},
    }
    if version.startswith("2."):
        ev["heading_deg"] = ev.pop("heading_degrees")
        ev["odometer_km"] = 12_000.5 + n
        ev["firmware_version"] = "4.2.1"
    ev.update(overrides)
    return ev


def line(ev: dict[str, Any]) -> bytes:
    return json.dumps(ev).encode()


def gz(lines: list[bytes]) -> bytes:
    return gzip.compress(b"".join(item + b"\n" for item in lines), mtime=0)


def run(lines: list[bytes], **kwargs: Any) -> BatchResult:
    kwargs.setdefault("known_vehicles", VEHICLES)
    res = validate_batch(gz(lines), source_file="f.jsonl.gz", arrival_time=ARRIVAL, **kwargs)
    res.check()
    assert res.accepted.schema == PROCESSED_SCHEMA
    assert res.dead_letters.schema == DLQ_SCHEMA
    return res


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], bytes]:
    def mutate(ev: dict[str, Any]) -> bytes:
        target = ev
        *parents, last = path.split(".")
        for p in parents:
            target = target[p]
        if value is _DELETE:
            del target[last]
        else:
            target[last] = value
        return line(ev)

    return mutate


def _token(path: str, token: bytes) -> Callable[[dict[str, Any]], bytes]:
    """Put a raw JSON token (NaN, 1e400) where a value is."""
    marker = 1234.5678

    def mutate(ev: dict[str, Any]) -> bytes:
        return _set(path, marker)(ev).replace(str(marker).encode(), token)

    return mutate


_DELETE = object()
FUTURE = _ts(ARRIVAL + policy.MAX_FUTURE_SKEW + timedelta(seconds=1))
ANCIENT = _ts(ARRIVAL - policy.ANCIENT_HORIZON - timedelta(seconds=1))

HOSTILE: list[tuple[str, Callable[[dict[str, Any]], bytes], FaultClass, str]] = [
    ("truncated json", lambda ev: line(ev)[:-9], FaultClass.MALFORMED_JSON, "not valid JSON"),
    ("missing comma", lambda ev: line(ev).replace(b", ", b" ", 1), FaultClass.MALFORMED_JSON, ""),
    ("empty line", lambda ev: b"", FaultClass.MALFORMED_JSON, "empty line"),
    ("array", lambda ev: b"[1, 2]", FaultClass.NOT_AN_OBJECT, "JSON array"),
    ("string", lambda ev: b'"hello"', FaultClass.NOT_AN_OBJECT, "JSON string"),
    ("no schema", _set("schema_version", _DELETE), FaultClass.MISSING_FIELD, "schema_version"),
    (
        "unknown major",
        _set("schema_version", "9.0.0"),
        FaultClass.UNKNOWN_SCHEMA,
        "major version 9",
    ),
    ("bad version", _set("schema_version", "one"), FaultClass.UNKNOWN_SCHEMA, "'one'"),
    ("no vehicle", _set("vehicle_id", _DELETE), FaultClass.MISSING_FIELD, "vehicle_id is required"),
    ("null speed", _set("speed_kmh", None), FaultClass.MISSING_FIELD, "speed_kmh is required"),
    ("no lat", _set("location.lat", _DELETE), FaultClass.MISSING_FIELD, "location.lat"),
    ("speed text", _set("speed_kmh", "fast"), FaultClass.WRONG_TYPE, "speed_kmh: expected number"),
    ("speed bool", _set("speed_kmh", True), FaultClass.WRONG_TYPE, "got boolean"),
    ("battery text", _set("battery_level_percent", "80"), FaultClass.WRONG_TYPE, "battery_level"),
    ("sensor text", _set("sensor_readings.motor_temp_c", "hot"), FaultClass.WRONG_TYPE, "motor"),
    (
        "env text",
        _set("environmental_conditions", "sunny"),
        FaultClass.WRONG_TYPE,
        "expected object",
    ),
    (
        "precip num",
        _set("environmental_conditions.precipitation", 3),
        FaultClass.WRONG_TYPE,
        "precip",
    ),
    ("custom text", _set("custom_data", "x"), FaultClass.WRONG_TYPE, "custom_data"),
    (
        "id number",
        _set("telemetry_id", 12345),
        FaultClass.WRONG_TYPE,
        "telemetry_id: expected string",
    ),
    ("id not uuid", _set("telemetry_id", "abc"), FaultClass.WRONG_TYPE, "expected a UUID"),
    (
        "bare pair",
        _set("location", [24.4, 54.3]),
        FaultClass.WRONG_TYPE,
        "location: expected object",
    ),
    ("dtc number", _set("diagnostic_codes", [7]), FaultClass.WRONG_TYPE, "diagnostic_codes[0]"),
    ("status num", _set("operational_status", 3), FaultClass.WRONG_TYPE, "operational_status"),
    (
        "NaN",
        _token("speed_kmh", b"NaN"),
        FaultClass.NON_FINITE,
        "speed_kmh is NaN",
    ),
    (
        "Infinity",
        _token("location.lon", b"-Infinity"),
        FaultClass.NON_FINITE,
        "-Infinity",
    ),
    ("overflow", _token("speed_kmh", b"1e400"), FaultClass.NON_FINITE, "speed_kmh is Infinity"),
    (
        "nan in custom",
        lambda ev: line(ev).replace(b'"ok"', b"NaN"),
        FaultClass.NON_FINITE,
        "custom",
    ),
    ("lat 91", _set("location.lat", 91.0), FaultClass.OUT_OF_RANGE, "location.lat=91.0"),
    ("lon -181", _set("location.lon", -181), FaultClass.OUT_OF_RANGE, "location.lon"),
    ("speed 301", _set("speed_kmh", 301), FaultClass.OUT_OF_RANGE, "speed_kmh=301.0"),
    ("speed < 0", _set("speed_kmh", -1), FaultClass.OUT_OF_RANGE, "speed_kmh=-1.0"),
    ("heading 360", _set("heading_degrees", 360), FaultClass.OUT_OF_RANGE, "[0, 360)"),
    ("battery 101", _set("battery_level_percent", 101), FaultClass.OUT_OF_RANGE, "battery"),
    ("fuel -5", _set("fuel_level_percent", -5), FaultClass.OUT_OF_RANGE, "fuel_level_percent"),
    (
        "tire 9999",
        _set("sensor_readings.tire_pressure_fl_kpa", 9999),
        FaultClass.OUT_OF_RANGE,
        "tire",
    ),
    ("status", _set("operational_status", "flying"), FaultClass.OUT_OF_RANGE, "'flying'"),
    ("bad dtc", _set("diagnostic_codes", ["P0A80", "oops"]), FaultClass.OUT_OF_RANGE, "'oops'"),
    ("bad date", _set("recorded_at", "2026-02-30T00:00:00.000Z"), FaultClass.INVALID_TIMESTAMP, ""),
    ("no zone", _set("recorded_at", "2026-11-01T12:00:00.000"), FaultClass.INVALID_TIMESTAMP, ""),
    ("epoch", _set("recorded_at", "1762000000"), FaultClass.INVALID_TIMESTAMP, "RFC 3339"),
    ("future", _set("recorded_at", FUTURE), FaultClass.FUTURE_TIMESTAMP, "after the batch arrival"),
    ("ancient", _set("recorded_at", ANCIENT), FaultClass.ANCIENT_TIMESTAMP, "30 days before"),
    ("stranger", _set("vehicle_id", str(uuid.uuid4())), FaultClass.UNKNOWN_VEHICLE, "fleet-core"),
    ("ctrl char", lambda ev: line(ev).replace(b'"ok"', b'"o\tk"'), FaultClass.MALFORMED_JSON, ""),
    (
        "surrogate",
        lambda ev: line(ev).replace(b'"ok"', b'"\\ud800"'),
        FaultClass.MALFORMED_JSON,
        "",
    ),
]


@pytest.mark.parametrize(("name", "mutate", "code", "detail"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_each_hostile_line_gets_its_reason_and_nothing_is_lost(
    name: str, mutate: Callable[[dict[str, Any]], bytes], code: FaultClass, detail: str
) -> None:
    good = [line(event(n)) for n in range(3)]
    bad = mutate(event(99))
    res = run([good[0], bad, good[1], good[2]])
    assert (res.received, res.accepted.num_rows, res.duplicates, res.dead_lettered) == (4, 3, 0, 1)
    dl = res.dead_letters.to_pylist()[0]
    assert (dl["reason_code"], dl["line_number"]) == (code.value, 2), dl["reason_detail"]
    assert detail in dl["reason_detail"]
    assert dl["raw_line"].encode() == bad  # verbatim
    assert dl["source_file"] == "f.jsonl.gz" and dl["arrival_time"] == ARRIVAL
    assert res.accepted.column("line_number").to_pylist() == [1, 3, 4]


def _text(old: bytes, new: bytes) -> Callable[[dict[str, Any]], bytes]:
    """Replace the first `old` of the serialised line with `new` (a grammar edit)."""
    return lambda ev: line(ev).replace(old, new, 1)


_SPEED = b'"speed_kmh": '
# RFC 8259's grammar, in the manner of JSONTestSuite's n_ (must refuse) cases: each breaks
# only the syntax of an otherwise valid record, so its reason must be the syntax one.
NOT_JSON: list[tuple[str, Callable[[dict[str, Any]], bytes]]] = [
    ("leading zero", _token("speed_kmh", b"01")),
    ("negative leading zero", _token("speed_kmh", b"-01")),
    ("bare fraction", _token("speed_kmh", b".5")),
    ("trailing dot", _token("speed_kmh", b"2.")),
    ("empty exponent", _token("speed_kmh", b"1.0e+")),
    ("plus sign", _token("speed_kmh", b"+1")),
    ("hex", _token("speed_kmh", b"0x1F")),
    ("digit separator", _token("speed_kmh", b"1_000")),
    ("spaced minus", _token("speed_kmh", b"- 1")),
    ("cut literal", _token("speed_kmh", b"tru")),
    ("capital literal", _token("speed_kmh", b"True")),
    ("single quotes", _token("speed_kmh", b"'1'")),
    ("unquoted key", _text(b'"speed_kmh"', b"speed_kmh")),
    ("missing colon", _text(_SPEED, b'"speed_kmh" ')),
    ("trailing comma", lambda ev: line(ev)[:-1] + b", }"),
    ("comment", lambda ev: line(ev)[:-1] + b" /* gateway */}"),
    ("trailing garbage", lambda ev: line(ev) + b"x"),
    ("two objects", lambda ev: line(ev) + line(ev)),
    ("byte order mark", lambda ev: b"\xef\xbb\xbf" + line(ev)),
    ("form feed as space", _text(b", ", b",\x0c")),
    ("hex escape", _text(b'"ok"', b'"\\x41"')),
    ("octal escape", _text(b'"ok"', b'"\\012"')),
    ("raw NUL in string", _text(b'"ok"', b'"o\x00k"')),
    ("nested 30,000 deep", _text(b'"ok"', b"[" * 30_000 + b"]" * 30_000)),
    ("unbalanced nesting", _text(b'"ok"', b"[" * 3_000 + b"}")),
    ("whitespace only", lambda ev: b" \t "),
    ("NUL bytes only", lambda ev: b"\x00" * 8),
]


@pytest.mark.parametrize(("name", "mutate"), NOT_JSON, ids=[c[0] for c in NOT_JSON])
def test_lines_outside_the_json_grammar_are_malformed(
    name: str, mutate: Callable[[dict[str, Any]], bytes]
) -> None:
    bad = mutate(event(99))
    res = run([line(event(0)), bad, line(event(1))])
    assert res.accepted.column("line_number").to_pylist() == [1, 3]
    (dl,) = res.dead_letters.to_pylist()
    assert dl["reason_code"] == FaultClass.MALFORMED_JSON.value, dl["reason_detail"]


@pytest.mark.parametrize(
    ("token", "speed"),
    [(b"1E+2", 100.0), (b"-0", 0.0), (b"9e-999", 0.0), (b"4.0e1", 40.0), (b"12", 12.0)],
    ids=["capital exponent", "negative zero", "underflow", "fraction and exponent", "integer"],
)
def test_every_number_the_json_grammar_allows_is_read(token: bytes, speed: float) -> None:
    res = run([_token("speed_kmh", token)(event(3))])
    assert res.dead_letters.num_rows == 0, res.dead_letters.to_pylist()
    assert res.accepted.column("speed_kmh").to_pylist() == [speed]


def test_insignificant_whitespace_and_many_extra_keys_are_valid_json() -> None:
    ev = event(4)
    tabs = line(ev).replace(b", ", b",\t\r ")
    extra = event(5, custom_data={f"k{i}": i for i in range(3_000)})
    res = run([tabs, line(extra)])
    assert (res.accepted.num_rows, res.dead_letters.num_rows) == (2, 0)


def test_the_bulk_path_decides_like_the_per_line_judge() -> None:
    """A hostile line gets the same verdict alone as among thousands of good lines."""
    many = [line(event(n)) for n in range(2000)]
    bad_lines = [mutate(event(5000 + i)) for i, (_, mutate, _, _) in enumerate(HOSTILE)]
    mixed = many[:]
    for k, b in enumerate(bad_lines):
        mixed.insert(50 * k + 7, b)
    res = run(mixed)
    got = {r["raw_line"]: r["reason_code"] for r in res.dead_letters.to_pylist()}
    for b, (name, _, code, _) in zip(bad_lines, HOSTILE, strict=True):
        assert got[b.decode()] == code.value, name
    assert res.accepted.num_rows == len(many)


def test_v1_and_v2_side_by_side_normalise_to_one_schema() -> None:
    v1 = run([line(event(1))], schema_folder="v1")
    v2 = run([line(event(2, version="2.0.0"))], schema_folder="v2")
    # Newer firmware that still sends the old name is read through the alias.
    old_name = event(3, version="2.1.0")
    old_name["heading_degrees"] = old_name.pop("heading_deg")
    v2_alias = run([line(old_name)], schema_folder="v2")
    rows = pa.concat_tables([v1.accepted, v2.accepted, v2_alias.accepted]).to_pylist()
    assert [r["schema_version"] for r in rows] == ["1.0.0", "2.0.0", "2.1.0"]
    assert [r["heading_degrees"] for r in rows] == [1.0, 2.0, 3.0]
    assert [r["odometer_km"] for r in rows] == [None, 12_002.5, 12_003.5]
    assert [r["firmware_version"] for r in rows] == [None, "4.2.1", "4.2.1"]
    first = rows[0]
    assert first["latitude"] == pytest.approx(24.451) and first["motor_temp_c"] == 61.5
    assert json.loads(first["custom_data"]) == {"gateway_id": "gw-1", "note": "ok"}
    assert json.loads(first["sensor_readings"])["brake_pad_mm"] == 7.5
    assert first["ingested_at"] == ARRIVAL and first["source_file"] == "f.jsonl.gz"


def test_schema_folder_must_match_the_record_major() -> None:
    res = run([line(event(1, version="2.0.0")), line(event(2))], schema_folder="v1")
    assert res.accepted.num_rows == 1
    assert res.dead_letters.column("reason_code").to_pylist() == ["UNKNOWN_SCHEMA"]
    assert "schema=v2/" in res.dead_letters.column("reason_detail")[0].as_py()
    # A v2 record without its v2 fields is refused exactly.
    res = run([line(event(1, version="2.0.0", odometer_km=None))], schema_folder="v2")
    assert res.dead_letters.column("reason_detail")[0].as_py().startswith("odometer_km is required")


def test_invalid_utf8_is_kept_as_base64() -> None:
    raw = line(event(1)).replace(b"gw-1", b"gw-\xff\xfe")
    res = run([line(event(0)), raw])
    dl = res.dead_letters.to_pylist()[0]
    assert dl["reason_code"] == "INVALID_UTF8" and dl["raw_is_base64"]
    assert base64.b64decode(dl["raw_line"]) == raw
    assert "0xff" in dl["reason_detail"]


def test_oversized_lines_are_refused_and_huge_ones_kept_as_bounded_evidence(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    big = event(1, custom_data={"blob": "x" * (policy.MAX_LINE_BYTES + 10)})
    res = run([line(event(0)), line(big), line(event(2))])
    dl = res.dead_letters.to_pylist()[0]
    assert (dl["reason_code"], dl["line_number"], dl["raw_truncated"]) == (
        "OVERSIZED_LINE",
        2,
        False,
    )
    assert dl["raw_line"].encode() == line(big)

    # A runaway line larger than the decompression step is cut to the evidence limit.
    monkeypatch.setattr(policy, "DLQ_RAW_MAX_BYTES", 1000)
    monkeypatch.setattr(policy, "DECOMPRESS_STEP_BYTES", 4096)
    huge = b"{" + b"7" * 50_000 + b"}"
    res = run([line(event(0)), huge, line(event(2))])
    dl = res.dead_letters.to_pylist()[0]
    assert (dl["reason_code"], dl["line_number"], dl["raw_size"]) == ("OVERSIZED_LINE", 2, 50_002)
    assert dl["raw_truncated"] and len(dl["raw_line"]) == 1000
    assert res.accepted.column("line_number").to_pylist() == [1, 3]


def test_truncated_gzip_keeps_complete_lines_and_dead_letters_the_tail() -> None:
    lines = [line(event(n)) for n in range(200)]
    data = gz(lines)
    cut = data[: len(data) * 2 // 3]
    res = validate_batch(cut, source_file="t.gz", arrival_time=ARRIVAL, known_vehicles=VEHICLES)
    res.check()
    assert res.truncated
    tail = res.dead_letters.to_pylist()[-1]
    assert tail["reason_code"] == "TRUNCATED_FILE"
    assert "ends before its end marker" in tail["reason_detail"]
    assert res.accepted.num_rows == res.received - 1 > 50
    # Recovered lines are exactly the first lines of the file, with their numbers.
    n = res.accepted.num_rows
    assert res.accepted.column("line_number").to_pylist() == list(range(1, n + 1))
    assert tail["line_number"] == n + 1
    assert lines[n].decode().startswith(tail["raw_line"])


def test_corrupt_gzip_and_trailing_garbage_never_crash() -> None:
    data = bytearray(gz([line(event(n)) for n in range(300)]))
    data[len(data) // 2 : len(data) // 2 + 8] = b"\x00" * 8
    res = validate_batch(bytes(data), source_file="c.gz", arrival_time=ARRIVAL)
    res.check()
    assert res.dead_letters.column("reason_code").to_pylist()[-1] == "TRUNCATED_FILE"

    res = validate_batch(gz([line(event(1))]) + b"junk", source_file="g.gz", arrival_time=ARRIVAL)
    res.check()
    assert (res.accepted.num_rows, res.dead_letters.column("reason_code").to_pylist()) == (
        1,
        ["TRUNCATED_FILE"],
    )


@pytest.mark.parametrize("data", [b"", gzip.compress(b"", mtime=0)], ids=["zero bytes", "empty gz"])
def test_empty_file_is_zero_records_and_reported(data: bytes) -> None:
    res = validate_batch(data, source_file="e.gz", arrival_time=ARRIVAL)
    res.check()
    assert res.empty and res.received == 0 and res.notes == ["empty file: zero records"]


def test_plain_and_crlf_json_lines_are_read() -> None:
    data = b"\r\n".join(line(event(n)) for n in range(3)) + b"\r\n"
    res = validate_batch(data, source_file="p.jsonl", arrival_time=ARRIVAL)
    res.check()
    assert res.accepted.num_rows == 3


def test_duplicates_are_counted_and_dropped() -> None:
    first = event(1)
    resent = copy.deepcopy(first)  # same telemetry_id, even with other content
    resent["speed_kmh"] = 12.0
    same_content = copy.deepcopy(first)  # same vehicle, time and content, new id
    same_content["telemetry_id"] = str(uuid.uuid4())
    other_time = copy.deepcopy(same_content)
    other_time["telemetry_id"] = str(uuid.uuid4())
    other_time["recorded_at"] = _ts(ARRIVAL - timedelta(seconds=1))
    uppercase = copy.deepcopy(first)
    uppercase["telemetry_id"] = first["telemetry_id"].upper()
    res = run([line(e) for e in (first, resent, same_content, other_time, uppercase)])
    assert (res.accepted.num_rows, res.duplicates, res.dead_lettered) == (2, 3, 0)
    assert res.accepted.column("line_number").to_pylist() == [1, 4]


def test_deduplicator_works_across_batches_and_reruns() -> None:
    dedup = Deduplicator()
    already = run([line(event(n)) for n in range(5)]).accepted
    dedup.seed(already)  # a processed partition written by an earlier run
    again, dups = dedup.filter(run([line(event(n)) for n in range(3, 8)]).accepted)
    assert (again.num_rows, dups) == (3, 2)
    assert sorted(again.column("line_number").to_pylist()) == [3, 4, 5]
    assert dedup.size == 8
    assert dedup.evict_before(ARRIVAL + timedelta(hours=1)) == 8 and dedup.size == 0


def test_validate_files_in_blocks_keeps_counts_and_line_numbers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setattr(policy, "BLOCK_BYTES", 4000)
    monkeypatch.setattr(policy, "DECOMPRESS_STEP_BYTES", 1000)
    folder = tmp_path / "schema=v1" / "date=2026-11-01" / "hour=12"
    folder.mkdir(parents=True)
    paths = []
    for k in range(2):
        lines = [line(event(n)) for n in range(30)] + [b"{broken"]
        p = folder / f"gw-{k}-20261101T1207.jsonl.gz"
        p.write_bytes(gz(lines))
        paths.append(str(p))
    results = list(
        validate_files([LandingFile.from_path(p) for p in paths], known_vehicles=VEHICLES)
    )
    assert len(results) > 4  # several blocks per file, memory bounded by the block size
    for r in results:
        r.check()
        assert r.arrival_time == ARRIVAL
    first = [r for r in results if r.source_file == paths[0]]
    numbers = sorted(
        n
        for r in first
        for n in r.accepted.column("line_number").to_pylist()
        + r.dead_letters.column("line_number").to_pylist()
    )
    assert numbers == list(range(1, 32))
    # The second file re-sends the same events: all duplicates across files.
    second = [r for r in results if r.source_file == paths[1]]
    assert sum(r.duplicates for r in second) == 30
    assert sum(r.dead_lettered for r in second) == 1


def test_late_events_land_in_their_event_hour() -> None:
    late = event(1, recorded_at=_ts(ARRIVAL - timedelta(hours=5)))
    res = run([line(event(0)), line(late)])
    hours = {h: t.num_rows for h, t in split_by_event_hour(res.accepted)}
    assert hours == {
        datetime(2026, 11, 1, 7, tzinfo=UTC): 1,
        datetime(2026, 11, 1, 12, tzinfo=UTC): 1,
    }
    assert partition_path("dlq/vehicle_telemetry/", ARRIVAL) == (
        "dlq/vehicle_telemetry/date=2026-11-01/hour=12"
    )


def test_landing_paths_and_bad_arguments_give_clear_errors() -> None:
    p = "landing/telemetry/schema=v2/date=2026-11-01/hour=12/gw-3-20261101T1207.jsonl.gz"
    assert arrival_time_from_path(p) == ARRIVAL
    assert LandingFile.from_path(p).schema_folder == "v2"
    with pytest.raises(ValueError, match="YYYYMMDDTHHMM"):
        arrival_time_from_path("landing/x.json")
    with pytest.raises(ValueError, match="no timezone"):
        validate_batch(b"", source_file="x", arrival_time=datetime(2026, 11, 1))
    res = run([line(event(1))], schema_folder="v7")
    assert res.dead_letters.column("reason_code").to_pylist() == ["UNKNOWN_SCHEMA"]


def _corrupt(raw: bytes, rnd: random.Random) -> bytes:
    kind = rnd.randrange(6)
    b = bytearray(raw)
    if kind == 0 and b:
        b[rnd.randrange(len(b))] = rnd.randrange(256)
    elif kind == 1 and b:
        del b[rnd.randrange(len(b)) :]
    elif kind == 2:
        b[rnd.randrange(len(b) + 1) : 0] = rnd.choice([b"NaN", b'"', b"{", b"\xc3", b"\\u", b"\t"])
    elif kind == 3:
        i = rnd.randrange(len(b))
        del b[i : i + rnd.randrange(1, 20)]
    elif kind == 4:
        token = rnd.choice([b'"40"', b"true", b"[40]", b"-1e999", b"null", b"{}"])
        b = bytearray(b.replace(b"61.5", token, 1))
    else:
        b = bytearray(rnd.randbytes(rnd.randrange(80)).replace(b"\n", b""))
    return bytes(b).replace(b"\n", b" ")


def test_random_corruptions_always_conserve_records() -> None:
    rnd = random.Random(20261101)
    for _ in range(25):
        lines = []
        for n in range(rnd.randrange(1, 150)):
            raw = line(event(n, version=rnd.choice(["1.0.0", "2.0.0"])))
            lines.append(_corrupt(raw, rnd) if rnd.random() < 0.3 else raw)
        data = gz(lines)
        if rnd.random() < 0.2:
            data = data[: rnd.randrange(len(data))]
        res = validate_batch(
            data, source_file="r.gz", arrival_time=ARRIVAL, known_vehicles=VEHICLES
        )
        res.check()
        numbers = (
            res.dead_letters.column("line_number").to_pylist()
            + res.accepted.column("line_number").to_pylist()
        )
        assert len(numbers) == len(set(numbers))  # each record is in exactly one place
        assert set(res.dead_letters.column("reason_code").to_pylist()) <= {
            c.value for c in validate.PRECEDENCE
        }
        if not res.truncated:
            assert res.received == len(lines)


def test_small_files_of_one_minute_are_validated_together_and_reported_per_file(
    tmp_path: Any,
) -> None:
    folder = tmp_path / "schema=v1" / "date=2026-11-01" / "hour=12"
    folder.mkdir(parents=True)
    contents = {
        "gw-a": [line(event(n)) for n in range(4)],
        "gw-b": [line(event(n)) for n in range(2, 6)] + [b"[]"],  # events 2 and 3 re-sent
        "gw-c": [line(event(n)) for n in range(10, 12)],
    }
    files = []
    for gw, lines in contents.items():
        p = folder / f"{gw}-20261101T1207.jsonl.gz"
        p.write_bytes(gz(lines))
        files.append(LandingFile.from_path(str(p)))
    results = {Path(r.source_file).name[:4]: r for r in validate_files(files)}
    assert set(results) == {"gw-a", "gw-b", "gw-c"}
    for r in results.values():
        r.check()
        assert set(r.accepted.column("source_file").to_pylist()) <= {r.source_file}
    b = results["gw-b"]
    assert (b.received, b.accepted.num_rows, b.duplicates, b.dead_lettered) == (5, 2, 2, 1)
    assert b.accepted.column("line_number").to_pylist() == [3, 4]
    assert b.dead_letters.to_pylist()[0]["line_number"] == 5
    assert results["gw-c"].accepted.column("line_number").to_pylist() == [1, 2]
