"""The fast validation path decides exactly like the per-line rules: dedup, screens, threads."""

from __future__ import annotations

import gzip
import json
import random
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from atlasmesh.telemetry import validate
from atlasmesh.telemetry.reasons import FaultClass
from atlasmesh.telemetry.registry import PROCESSED_SCHEMA, REGISTRY, Field, JsonType
from atlasmesh.telemetry.validate import (
    BatchResult,
    Deduplicator,
    LandingFile,
    split_by_event_hour,
    validate_batch,
    validate_files,
)

ARRIVAL = datetime(2026, 11, 1, 12, 7, tzinfo=UTC)
VEHICLES = [str(uuid.UUID(int=i + 1, version=4)) for i in range(5)]


def _event(n: int, version: str = "1.0.0", **overrides: Any) -> dict[str, Any]:
    recorded = ARRIVAL - timedelta(minutes=2, seconds=n)
    ev: dict[str, Any] = {
        "telemetry_id": str(uuid.UUID(int=10_000 + n, version=4)),
        "vehicle_id": VEHICLES[n % len(VEHICLES)],
        "recorded_at": recorded.strftime("%Y-%m-%dT%H:%M:%S.")
        + f"{recorded.microsecond // 1000:03d}Z",
        "schema_version": version,
        "location": {"lat": 24.45, "lon": 54.38},
        "speed_kmh": 40.0 + n % 50,
        "heading_degrees": float(n % 360),
        "battery_level_percent": 80.5,
        "sensor_readings": {"motor_temp_c": 61.5, "brake_pad_mm": 7.5},
        "diagnostic_codes": [],
        "environmental_conditions": {"ambient_temp_c": 33.0, "precipitation": "none"},
        "operational_status": "driving",
        "custom_data": {"gateway_id": "gw-1"},
    }
    if version.startswith("2."):
        ev["heading_deg"] = ev.pop("heading_degrees")
        ev.update(odometer_km=12_000.5 + n, firmware_version="4.2.1")
    ev.update(overrides)
    return ev


def _gz(events: list[dict[str, Any] | bytes]) -> bytes:
    lines = [e if isinstance(e, bytes) else json.dumps(e).encode() for e in events]
    return gzip.compress(b"".join(line + b"\n" for line in lines), mtime=0)


def _run(events: list[dict[str, Any] | bytes], **kwargs: Any) -> BatchResult:
    kwargs.setdefault("known_vehicles", VEHICLES)
    res = validate_batch(_gz(events), source_file="f.gz", arrival_time=ARRIVAL, **kwargs)
    res.check()
    return res


def _paths(
    fields: tuple[Field, ...], prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], Field]]:
    """(path, field) for every wire name of every field, nested ones included."""
    for f in fields:
        for name in f.names:
            yield (*prefix, name), f
        if f.fields and not f.free_form:
            yield from _paths(f.fields, (*prefix, f.name))


_WRONG = {
    JsonType.NUMBER: ["7.5 as text", True, [1.0], {"v": 1}],
    JsonType.OBJECT: ["text", 3, [1]],
    JsonType.ARRAY: ["P0A80", 3, {"code": "P0A80"}],
    JsonType.STRING: [3, True, ["x"], {"x": 1}],
}
_CASES = [
    (schema.version, path, bad)
    for schema in REGISTRY
    for path, f in _paths(schema.fields)
    if f.format is None and f.enum is None
    for bad in _WRONG[f.type]
]
_FIELDS = {(s.version, path): f for s in REGISTRY for path, f in _paths(s.fields)}


@pytest.mark.parametrize(("version", "path", "bad"), _CASES, ids=lambda v: str(v))
def test_a_wrong_json_type_in_any_field_is_refused_among_good_lines(
    version: str, path: tuple[str, ...], bad: Any
) -> None:
    """Every field of every registered version, aliases and nested keys included."""
    ev = _event(99, version)
    target = ev
    for key in path[:-1]:
        target = target[key]
    for name in _FIELDS[version, path].names:
        target.pop(name, None)  # an alias is read only when the canonical name is absent
    target[path[-1]] = bad
    res = _run([_event(n, version) for n in range(40)] + [ev])
    assert (res.accepted.num_rows, res.dead_lettered) == (40, 1)
    dl = res.dead_letters.to_pylist()[0]
    assert dl["reason_code"] == FaultClass.WRONG_TYPE.value, (path, dl["reason_detail"])
    assert ": expected " in dl["reason_detail"]


def test_typed_keys_inside_custom_data_do_not_refuse_good_lines() -> None:
    """custom_data is free-form: its keys may look like schema keys with any value."""
    odd = {"speed_kmh": "fast", "location": [1, 2], "precipitation": 3, "custom_data": True}
    res = _run([_event(n, custom_data=odd) for n in range(30)])
    assert (res.accepted.num_rows, res.dead_lettered) == (30, 0)
    assert json.loads(res.accepted.column("custom_data")[0].as_py()) == odd


def test_only_invalid_utf8_lines_are_refused_among_many_non_ascii_lines() -> None:
    lines = [
        json.dumps(_event(n, custom_data={"driver": "Zoë Ångström"}), ensure_ascii=False).encode()
        for n in range(3000)
    ]
    broken = {17: b"\xff", 1500: b"\xc3(", 2999: b"\xe2\x82"}
    for i, junk in broken.items():
        lines[i] = lines[i].replace("Zoë".encode(), b"Zo" + junk)
    res = _run(lines)
    dead = res.dead_letters.to_pylist()
    assert [(d["line_number"], d["reason_code"]) for d in dead] == [
        (i + 1, "INVALID_UTF8") for i in sorted(broken)
    ]
    assert res.accepted.num_rows == 3000 - len(broken)
    assert json.loads(res.accepted.column("custom_data")[0].as_py())["driver"] == "Zoë Ångström"


def _key_table(rows: list[tuple[str, str, int, float]]) -> pa.Table:
    """A processed table: (telemetry_id, vehicle_id, recorded_at ms, speed) per row."""
    n = len(rows)
    cols: dict[str, Any] = {name: [None] * n for name in PROCESSED_SCHEMA.names}
    cols["telemetry_id"] = [r[0] for r in rows]
    cols["vehicle_id"] = [r[1] for r in rows]
    cols["recorded_at"] = [r[2] for r in rows]
    cols["ingested_at"] = [0] * n
    cols["speed_kmh"] = [r[3] for r in rows]
    for name in ("latitude", "longitude", "heading_degrees"):
        cols[name] = [0.0] * n
    for name in ("sensor_readings", "operational_status", "schema_version", "source_file"):
        cols[name] = ["x"] * n
    cols["diagnostic_codes"] = [[]] * n
    cols["line_number"] = list(range(n))
    return pa.table(cols, schema=PROCESSED_SCHEMA)


def _plain_dedup(batches: list[list[tuple[str, str, int, float]]]) -> list[list[bool]]:
    """The dedup rule with Python sets: first of its id and content in the batch, not seen
    before (ids: in any event hour the batch touches; content: in its own hour)."""
    ids: dict[int, set[str]] = {}
    contents: set[tuple[str, int, float]] = set()
    out = []
    for rows in batches:
        hours = {ts // 3_600_000 for _, _, ts, _ in rows}
        earlier = set().union(*(ids.get(h, set()) for h in hours))
        first_ids: set[str] = set()
        first_contents: set[tuple[str, int, float]] = set()
        keep = []
        for tid, vid, ts, speed in rows:
            tid, content = tid.lower(), (vid, ts, speed)
            ok = tid not in first_ids and content not in first_contents
            first_ids.add(tid)
            first_contents.add(content)
            keep.append(ok and tid not in earlier and content not in contents)
        for (tid, vid, ts, speed), kept in zip(rows, keep, strict=True):
            if kept:
                ids.setdefault(ts // 3_600_000, set()).add(tid.lower())
                contents.add((vid, ts, speed))
        out.append(keep)
    return out


def test_deduplicator_matches_plain_sets_over_many_batches_and_hours() -> None:
    """Exact keys (ids differing in one bit, shared words) and state that grows a lot."""
    rnd = random.Random(4)
    hour0 = int(ARRIVAL.timestamp() * 1000) // 3_600_000 * 3_600_000
    pool: list[tuple[str, str, int, float]] = []
    batches = []
    for _ in range(40):
        rows = []
        for _ in range(rnd.randrange(200, 3000)):
            if pool and rnd.random() < 0.1:
                tid, vid, ts, speed = rnd.choice(pool)  # a re-send, maybe with a new id
                if rnd.random() < 0.5:
                    tid = str(uuid.UUID(int=rnd.getrandbits(128)))
            else:
                word = rnd.choice([0, 1, 2**64 - 1, rnd.getrandbits(64)])
                other = rnd.getrandbits(64) if rnd.random() < 0.5 else rnd.randrange(4)
                tid = str(uuid.UUID(int=(word << 64) | other if rnd.random() < 0.5 else other))
                vid = rnd.choice(VEHICLES)
                ts = hour0 + rnd.randrange(4) * 3_600_000 + rnd.randrange(50)
                speed = float(rnd.randrange(3))
            if rnd.random() < 0.05:
                tid = tid.upper()  # ids compare case-insensitively
            rows.append((tid, vid, ts, speed))
            pool.append((tid, vid, ts, speed))
        batches.append(rows)
    dedup = Deduplicator()
    for rows, expected in zip(batches, _plain_dedup(batches), strict=True):
        assert dedup.keep_mask(_key_table(rows)).tolist() == expected
    kept = sum(sum(k) for k in _plain_dedup(batches))
    assert dedup.size == kept
    first_hour = datetime.fromtimestamp(hour0 / 1000, tz=UTC)
    assert dedup.hours == [first_hour + timedelta(hours=k) for k in range(4)]
    dropped = dedup.evict_before(first_hour + timedelta(hours=2))
    assert dropped + dedup.size == kept
    assert dedup.hours == [first_hour + timedelta(hours=k) for k in (2, 3)]


def test_seeded_partition_makes_every_resent_event_a_duplicate() -> None:
    events = [_event(n) for n in range(200)]
    first = _run(events)
    dedup = Deduplicator()
    dedup.seed(first.accepted)
    again = validate_batch(
        _gz(events),
        source_file="again.gz",
        arrival_time=ARRIVAL,
        known_vehicles=VEHICLES,
    )
    out = list(validate_files([_landing("again", _gz(events))], deduplicator=dedup))
    assert again.accepted.num_rows == 200
    assert [(r.accepted.num_rows, r.duplicates) for r in out] == [(0, 200)]


def _landing(name: str, data: bytes, minute: int = 7) -> LandingFile:
    path = f"landing/telemetry/schema=v1/date=2026-11-01/hour=12/{name}-20261101T12{minute:02d}.jsonl.gz"
    return LandingFile.from_path(path, read=lambda: data)


class _KeepEverything(Deduplicator):
    """Like the lake pipeline's deduplicator: duplicates are decided elsewhere."""

    def keep_mask(self, table: pa.Table) -> np.ndarray:
        return np.ones(table.num_rows, dtype=bool)

    def filter(self, table: pa.Table) -> tuple[pa.Table, int]:
        return table, 0


def test_a_deduplicator_subclass_decides_through_its_own_methods() -> None:
    data = _gz([_event(n) for n in range(10)] * 2)
    files = [_landing("gw-a", data), _landing("gw-b", data), _landing("gw-c", data, minute=8)]
    results = list(validate_files(files, deduplicator=_KeepEverything()))
    assert [(r.accepted.num_rows, r.duplicates) for r in results] == [(20, 0)] * 3
    default = list(validate_files(files))
    assert [(r.accepted.num_rows, r.duplicates) for r in default] == [(10, 10), (0, 20), (0, 20)]


def test_split_by_event_hour_keeps_row_order_and_the_processed_schema() -> None:
    hours = [5, 3, 5, 4, 3]
    events = [
        _event(n, recorded_at=f"2026-11-01T0{h}:00:{n:02d}.000Z") for n, h in enumerate(hours)
    ]
    res = _run(events, known_vehicles=None)
    parts = list(split_by_event_hour(res.accepted))
    assert [h.hour for h, _ in parts] == [5, 3, 4]
    assert [t.column("line_number").to_pylist() for _, t in parts] == [[1, 3], [2, 5], [4]]
    assert all(t.schema.equals(PROCESSED_SCHEMA, check_metadata=True) for _, t in parts)
    one = _run([_event(n) for n in range(3)])
    [(hour, table)] = list(split_by_event_hour(one.accepted))
    assert hour == datetime(2026, 11, 1, 12, tzinfo=UTC) and table.num_rows == 3


def test_results_before_an_unreadable_file_are_delivered_then_the_error() -> None:
    good = _gz([_event(n) for n in range(5)])

    def unreadable() -> bytes:
        raise OSError("landing object vanished")

    files = [
        _landing("gw-a", good, minute=5),
        _landing("gw-b", good, minute=6),
        LandingFile("landing/x-20261101T1207.jsonl.gz", ARRIVAL, unreadable),
    ]
    seen = []
    with pytest.raises(OSError, match="vanished"):
        for res in validate_files(files):
            seen.append(Path(res.source_file).name)
    # Both files read before the failure are delivered, although they were one group.
    assert seen == ["gw-a-20261101T1205.jsonl.gz", "gw-b-20261101T1206.jsonl.gz"]


def test_stopping_early_leaves_no_worker_thread_behind() -> None:
    files = [_landing(f"gw-{k}", _gz([_event(n) for n in range(50)]), minute=k) for k in range(6)]
    before = threading.active_count()
    results = validate_files(files)
    first = next(results)
    results.close()
    assert first.received == 50
    assert threading.active_count() == before


def _minute_file(folder: str, name: str, minute: int, data: bytes) -> LandingFile:
    path = (
        f"landing/telemetry/schema={folder}/date=2026-11-01/hour=12/"
        f"{name}-20261101T12{minute:02d}.jsonl.gz"
    )
    return LandingFile.from_path(path, read=lambda: data)


def _alone(f: LandingFile) -> BatchResult:
    """The file validated on its own: what validate_files must give it inside any group."""
    return validate_batch(
        f.read(),
        source_file=f.path,
        arrival_time=f.arrival_time,
        known_vehicles=VEHICLES,
        schema_folder=f.schema_folder,
    )


@pytest.fixture
def blocks_validated(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the blocks the validator parses (one per group of small files)."""
    calls: list[int] = []
    real = validate._validate_block

    def counting(block: Any, ctx: Any, want_keys: bool = False) -> Any:
        calls.append(len(block.names or [ctx.source_file]))
        return real(block, ctx, want_keys)

    monkeypatch.setattr(validate, "_validate_block", counting)
    return calls


def test_files_of_several_minutes_are_one_block_per_folder_and_judged_by_their_own_arrival(
    blocks_validated: list[int],
) -> None:
    # 12:06 is more than 5 minutes after a 12:00 arrival only; 30 days and 2 minutes before
    # 12:02 is ancient for arrivals from 12:03 on only.
    edge_future = "2026-11-01T12:06:00.000Z"
    edge_ancient = "2026-10-02T12:01:00.000Z"
    files = []
    for k, (folder, minute) in enumerate([("v1", 0), ("v2", 1), ("v1", 3), ("v2", 6), ("v1", 9)]):
        version = "1.0.0" if folder == "v1" else "2.0.0"
        base = 100 * k
        events: list[dict[str, Any] | bytes] = [_event(base + n, version) for n in range(4)]
        events += [
            _event(base + 50, version, recorded_at=edge_future),
            _event(base + 51, version, recorded_at=edge_ancient),
            b'{"telemetry_id": "cut',
        ]
        files.append(_minute_file(folder, f"gw-{k}", minute, _gz(events)))
    results = list(validate_files(files, known_vehicles=VEHICLES))
    assert blocks_validated == [3, 2]  # one parse per schema folder, not one per minute
    assert [r.source_file for r in results] == [f.path for f in files]
    for f, res in zip(files, results, strict=True):
        alone = _alone(f)
        assert res.arrival_time == f.arrival_time
        assert res.accepted.equals(alone.accepted)
        assert res.dead_letters.equals(alone.dead_letters)
        assert (res.received, res.duplicates) == (alone.received, alone.duplicates) == (7, 0)
        assert set(res.accepted.column("ingested_at").to_pylist()) == {f.arrival_time}
        assert set(res.dead_letters.column("arrival_time").to_pylist()) == {f.arrival_time}
    codes = [sorted(r.reason_counts) for r in results]
    assert codes[0] == ["FUTURE_TIMESTAMP", "MALFORMED_JSON"]  # 12:00: 12:06 is too far ahead
    assert codes[1] == ["MALFORMED_JSON"]  # 12:01: both edge events are fine
    assert codes[2:] == [["ANCIENT_TIMESTAMP", "MALFORMED_JSON"]] * 3
    future = results[0].dead_letters.filter(
        pa.compute.equal(results[0].dead_letters.column("reason_code"), "FUTURE_TIMESTAMP")
    )
    assert future.column("reason_detail").to_pylist() == [
        f"recorded_at={edge_future} is more than 0:05:00 after the batch arrival "
        "2026-11-01T12:00:00Z"
    ]
    late = results[4].dead_letters.to_pylist()[0]
    assert late["reason_detail"].endswith("before the batch arrival 2026-11-01T12:09:00Z")


def test_cut_and_empty_files_stay_in_their_group_and_report_their_own_faults(
    blocks_validated: list[int],
) -> None:
    whole = _gz([_event(n) for n in range(6)])
    cut = _gz([_event(n) for n in range(10, 20)])
    files = [
        _minute_file("v1", "gw-a", 0, whole),
        _minute_file("v1", "gw-b", 1, cut[: len(cut) * 2 // 3]),
        _minute_file("v1", "gw-c", 2, b""),
        _minute_file("v1", "gw-d", 3, _gz([_event(n) for n in range(30, 33)])),
    ]
    results = list(validate_files(files, known_vehicles=VEHICLES))
    assert blocks_validated == [3]
    assert [(r.truncated, r.empty) for r in results] == [
        (False, False),
        (True, False),
        (False, True),
        (False, False),
    ]
    for f, res in zip(files, results, strict=True):
        res.check()
        alone = _alone(f)
        assert res.accepted.equals(alone.accepted)
        assert res.dead_letters.equals(alone.dead_letters)
        assert (res.received, res.notes) == (alone.received, alone.notes)
    [tail] = results[1].dead_letters.to_pylist()
    assert tail["reason_code"] == "TRUNCATED_FILE"
    assert tail["source_file"] == files[1].path
    assert tail["line_number"] == results[1].accepted.num_rows + 1


def test_duplicates_across_folders_are_decided_in_the_order_files_are_given() -> None:
    resent = _event(7)
    files = [
        _minute_file("v2", "gw-a", 1, _gz([_event(1, "2.0.0"), _event(7, "2.0.0")])),
        _minute_file("v1", "gw-b", 3, _gz([resent, _event(8)])),
        _minute_file("v2", "gw-c", 5, _gz([_event(9, "2.0.0"), _event(1, "2.0.0")])),
    ]
    # The v1 file is validated in its own group, yet the v2 delivery before it wins.
    results = list(validate_files(files, known_vehicles=VEHICLES))
    assert [(r.accepted.num_rows, r.duplicates) for r in results] == [(2, 0), (1, 1), (1, 1)]
    assert results[1].accepted.column("telemetry_id").to_pylist() == [_event(8)["telemetry_id"]]
    assert resent["telemetry_id"] in results[0].accepted.column("telemetry_id").to_pylist()
    [group] = list(validate.validate_file_groups(files, known_vehicles=VEHICLES))
    assert [r.source_file for r in group.results] == [f.path for f in files]
    assert group.accepted.equals(pa.concat_tables([r.accepted for r in results]))
    assert group.accepted.column("source_file").to_pylist() == [files[0].path] * 2 + [
        files[1].path,
        files[2].path,
    ]


_ODD_NUMBERS: list[Any] = [None, 0, -0.0, 1e308, -1e308, 90, 90.000001, -90.5, 359.99, 360, 1e3]


def _odd_event(n: int, rnd: random.Random, version: str) -> dict[str, Any]:
    """An event whose numbers, objects and aliases take edge values (nulls, bounds, absences)."""
    ev = _event(n, version)
    for key in ("speed_kmh", "battery_level_percent", "fuel_level_percent", "odometer_km"):
        if rnd.random() < 0.5:
            ev[key] = rnd.choice(_ODD_NUMBERS)
    # Both heading names, either or both null: the alias is coalesced.
    ev["heading_deg"] = rnd.choice(_ODD_NUMBERS)
    ev["heading_degrees"] = rnd.choice(_ODD_NUMBERS)
    for parent, keys in (
        ("location", ("lat", "lon")),
        ("sensor_readings", ("motor_temp_c", "brake_pad_mm", "load_kg")),
        ("environmental_conditions", ("ambient_temp_c", "humidity_percent")),
    ):
        roll = rnd.random()
        if roll < 0.1:
            ev[parent] = None
        elif roll < 0.2:
            ev.pop(parent)
        else:
            ev[parent] = {k: rnd.choice(_ODD_NUMBERS) for k in keys if rnd.random() < 0.8}
    return ev


def test_numpy_rule_masks_equal_the_polars_masks_on_edge_values() -> None:
    rnd = random.Random(5)
    for version in ("1.0.0", "2.0.0"):
        schema = REGISTRY.get(version)
        data = b"".join(
            json.dumps(_odd_event(n, rnd, version)).encode() + b"\n" for n in range(400)
        )
        lines = validate._Lines(data)
        ctx = validate._context("f.gz", ARRIVAL, None, None, REGISTRY)
        parsed, failed = validate._parse(lines, np.arange(len(lines)), ctx.parser)
        assert not len(failed)
        part = parsed.with_columns(validate._timestamps(schema))
        values = validate._FieldValues(part)
        specs = validate._rule_specs(schema, ctx, False)
        checked = 0
        for code, mask, _, spec in specs:
            if spec is None:
                continue
            expected = part.select(mask.fill_null(False)).to_series().to_numpy()
            got = values.mask(spec)
            assert got.dtype == bool
            assert (got == expected).all(), (code, spec.kind, [f.name for f in spec.chain])
            checked += 1
        assert checked > 30  # most rules are computed by numpy


def test_a_block_with_malformed_lines_parses_as_without_the_shortcut() -> None:
    rnd = random.Random(9)
    good = [json.dumps(_event(n)) for n in range(300)]
    hostile = [
        good[0].replace('"speed_kmh"', "speed_kmh", 1),
        good[1].replace(",", ",,", 1),
        good[2][:-1],
        good[3] + "}",
        good[4].replace('"gw-1"', '"a, b {c ,x"', 1),  # looks malformed, is valid JSON
        json.dumps(_event(5, speed_kmh="X")).replace('"X"', "1e999"),  # refused by polars
        good[6][: len(good[6]) // 2] + "}",
    ]
    lines_in = good[7:]
    for h in hostile:
        lines_in.insert(rnd.randrange(len(lines_in)), h)
    lines = validate._Lines("\n".join(lines_in).encode() + b"\n")
    parser = validate._parser_for(REGISTRY)
    idx = np.arange(len(lines))
    ctx = validate._context("f.gz", ARRIVAL, None, None, REGISTRY)
    _, risky = validate._suspects(lines, validate._text(lines, np.ones(len(lines), bool)), ctx)
    # Flagged: the unquoted key, the double comma, both unbalanced lines, the odd text.
    assert risky.sum() == 5
    frame, failed = validate._parse(lines, idx, parser, risky)
    plain_frame, plain_failed = validate._parse(lines, idx, parser)
    assert frame.equals(plain_frame)
    assert sorted(failed.tolist()) == sorted(plain_failed.tolist())
    assert len(failed) == 6  # all hostile lines but the valid one
