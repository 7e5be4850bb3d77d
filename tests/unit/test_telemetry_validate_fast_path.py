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
    assert seen == ["gw-a-20261101T1205.jsonl.gz"]  # as before: gw-b waited for its group


def test_stopping_early_leaves_no_worker_thread_behind() -> None:
    files = [_landing(f"gw-{k}", _gz([_event(n) for n in range(50)]), minute=k) for k in range(6)]
    before = threading.active_count()
    results = validate_files(files)
    first = next(results)
    results.close()
    assert first.received == 50
    assert threading.active_count() == before
