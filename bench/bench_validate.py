"""Benchmark: validating landing telemetry vs chDB bulk-loading the same JSON lines unvalidated.

Generates an arrival window of gzip landing files (1,000 vehicles at 1 Hz, v1 and v2
firmware, ~1% faults of every kind), then in separate processes (so each peak RSS is its
own, and each chDB directory has one owner), interleaved so machine load hits all alike:

- baseline: chDB `INSERT INTO <MergeTree> SELECT * FROM file(..., JSONEachRow)`, no checks;
- validate only: `validate_files` + cross-file dedup + DLQ records, every result consumed;
- whole path: the same, accepted rows written to Parquet by event hour and DLQ rows to
  Parquet (the lake sink), then the same rows inserted into a chDB MergeTree (the warehouse
  sink);
- with `--compare FILE`: validate only, with the validator module in FILE (e.g. the one
  before a change: `git show <rev>:atlasmesh/telemetry/validate.py > /tmp/old.py`).

With these faults the baseline loads only about half the rows (`rows_loaded`): chDB reads
the object of a truncated line as a string across the lines after it and drops them all,
so it parses less than the validator does; its ratio flatters the baseline.

Run: `.venv/bin/python bench/bench_validate.py [--events 1200000] [--compare FILE]`;
results go to bench/results/validate.json.

`--small-hours --compare FILE` times the fixed cost per block instead: it simulates a demo
day (36 vehicles, a sample every 30 s: ~4,300 events in ~70-96 gateway files an hour) and
validates every arrival hour as staging does (keep-every-row dedup), with this validator and
the one in FILE alternately in one warmed-up process, then one large block (a whole day of
one schema folder as one file) the same way; results go to
bench/results/validate_small_hours.json.

`--fuzz N --compare FILE` is the parity check that goes with such a change: N batches of
landing files full of hostile lines, each validated by this validator and the one in FILE,
every result compared (tables with their schemas, counts, flags, notes); exit status 1 on
any difference.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

START = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
RESULTS = Path(__file__).parent / "results" / "validate.json"

_V1 = (
    '{"telemetry_id":"%s","vehicle_id":"%s","recorded_at":"%s","schema_version":"1.0.0",'
    '"location":{"lat":%.6f,"lon":%.6f},"speed_kmh":%.1f,"heading_degrees":%.1f,'
    '"battery_level_percent":%s,"fuel_level_percent":%s,"sensor_readings":{%s},'
    '"diagnostic_codes":[%s],"environmental_conditions":{"ambient_temp_c":%.1f,'
    '"humidity_percent":%.0f,"precipitation":"none","road_condition":"dry"},'
    '"operational_status":"%s","custom_data":{"gateway_id":"gw-%02d"}}'
)
_V2 = (
    _V1.replace('"1.0.0"', '"2.0.0"')
    .replace('"heading_degrees"', '"heading_deg"')
    .replace(
        '"fuel_level_percent":%s,',
        '"fuel_level_percent":%s,"odometer_km":%.1f,"firmware_version":"4.2.%d",',
    )
)
_EV = (
    '"motor_temp_c":%.1f,"battery_temp_c":%.1f,"tire_pressure_fl_kpa":%.1f,'
    '"tire_pressure_fr_kpa":%.1f,"tire_pressure_rl_kpa":%.1f,"tire_pressure_rr_kpa":%.1f,'
    '"vibration_rms_g":%.3f,"brake_pad_mm":%.1f,"aux_battery_v":%.2f,"load_kg":%.0f,"energy_rate":%.1f'
)
_ICE = _EV.replace("motor_temp_c", "engine_temp_c").replace("battery_temp_c", "coolant_temp_c")


def _event(rnd: random.Random, vid: str, k: int, ts: datetime, gw: int, v2: bool) -> str:
    ev = k % 3 != 0
    sensors = (_EV if ev else _ICE) % (
        rnd.uniform(40, 90),
        rnd.uniform(25, 40),
        *(rnd.uniform(220, 240) for _ in range(4)),
        rnd.uniform(0, 0.5),
        rnd.uniform(3, 12),
        rnd.uniform(12.1, 12.8),
        rnd.uniform(0, 900),
        rnd.uniform(12, 25),
    )
    stamp = ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"
    level = f"{rnd.uniform(5, 100):.1f}"
    args: list[object] = [
        str(uuid.UUID(int=rnd.getrandbits(128), version=4)),
        vid,
        stamp,
        24.2 + (k % 100) / 200 + rnd.random() / 100,
        54.3 + (k % 37) / 100 + rnd.random() / 100,
        rnd.uniform(0, 120),
        rnd.uniform(0, 359.9),
        level if ev else "null",
        "null" if ev else level,
    ]
    if v2:
        args += [40_000 + k * 10 + ts.minute, k % 9]
    args += [sensors, '"P0A80"' if rnd.random() < 0.02 else "", 31.5, 40, "driving", gw]
    return (_V2 if v2 else _V1) % tuple(args)


_FAULTS = [
    ("MALFORMED_JSON", lambda s, r: s[: r.randrange(10, len(s) - 5)]),
    ("NON_FINITE", lambda s, r: s.replace('"speed_kmh":', '"speed_kmh":NaN,"x":', 1)),
    ("OUT_OF_RANGE", lambda s, r: s.replace('"speed_kmh":', '"speed_kmh":9', 1)),
    (
        "WRONG_TYPE",
        lambda s, r: s.replace('"brake_pad_mm":', '"brake_pad_mm":"', 1).replace(
            ',"aux_battery_v"', '","aux_battery_v"', 1
        ),
    ),
    ("MISSING_FIELD", lambda s, r: s.replace('"vehicle_id"', '"vehicle"', 1)),
    # The vehicle_id value starts at character 69: its first 8 hex digits become ffffffff.
    ("UNKNOWN_VEHICLE", lambda s, r: s[:69] + "ffffffff" + s[77:]),
    ("FUTURE_TIMESTAMP", lambda s, r: s.replace("2026-11-01T", "2026-11-09T", 1)),
    ("INVALID_UTF8", None),
    ("DUPLICATE", None),
]


def generate(root: Path, events: int, vehicles: int, gateways: int, fault_rate: float) -> dict:
    """Write landing files; return counts of what was injected."""
    rnd = random.Random(42)
    ids = [str(uuid.UUID(int=rnd.getrandbits(128), version=4)) for _ in range(vehicles)]
    minutes = max(1, events // (vehicles * 60))
    root.mkdir(parents=True, exist_ok=True)
    (root / "vehicles.txt").write_text("\n".join(ids))
    injected: dict[str, int] = {}
    total = 0
    for minute in range(minutes):
        arrival = START + timedelta(minutes=minute + 1)
        for gw in range(gateways):
            for folder, v2 in (("v1", False), ("v2", True)):
                lines: list[bytes] = []
                for k in range(gw, vehicles, gateways):
                    if (k % 10 < 3) != v2:  # 30% of the fleet runs v2 firmware
                        continue
                    for sec in range(60):
                        ts = START + timedelta(minutes=minute, seconds=sec, milliseconds=k % 997)
                        text = _event(rnd, ids[k], k, ts, gw, v2)
                        raw = text.encode()
                        if rnd.random() < fault_rate:
                            name, fn = _FAULTS[rnd.randrange(len(_FAULTS))]
                            injected[name] = injected.get(name, 0) + 1
                            if name == "INVALID_UTF8":
                                raw = raw.replace(b"driving", b"driv\xffng")
                            elif name == "DUPLICATE":
                                lines.append(raw)
                                total += 1
                            else:
                                raw = fn(text, rnd).encode()
                        lines.append(raw)
                        total += 1
                if not lines:
                    continue
                part = root / f"schema={folder}/date={arrival:%Y-%m-%d}/hour={arrival:%H}"
                part.mkdir(parents=True, exist_ok=True)
                name = f"gw-{gw:02d}-{arrival:%Y%m%dT%H%M}.jsonl.gz"
                data = gzip.compress(b"\n".join(lines) + b"\n", compresslevel=6, mtime=0)
                (part / name).write_bytes(data)
    return {"lines": total, "injected": injected}


_DDL = """CREATE TABLE t (
  telemetry_id String, vehicle_id String, recorded_at DateTime64(3, 'UTC'),
  ingested_at DateTime64(3, 'UTC') DEFAULT now64(), location Tuple(lat Float64, lon Float64),
  speed_kmh Float32, heading_degrees Float32, battery_level_percent Nullable(Float32),
  fuel_level_percent Nullable(Float32), sensor_readings String, diagnostic_codes Array(String),
  operational_status LowCardinality(String), environmental_conditions String, custom_data String
) ENGINE = MergeTree ORDER BY (vehicle_id, recorded_at)"""


def phase_baseline(root: Path) -> dict:
    """chDB bulk load of the raw JSON lines into a MergeTree, no validation."""
    from chdb import session

    with tempfile.TemporaryDirectory() as tmp:
        s = session.Session(tmp)
        s.query("CREATE DATABASE b")
        s.query(_DDL.replace("CREATE TABLE t", "CREATE TABLE b.t"))
        glob = f"{root}/schema=*/date=*/hour=*/*.jsonl.gz"
        cpu = _cpu_seconds()
        t0 = time.perf_counter()
        s.query(
            "INSERT INTO b.t (telemetry_id, vehicle_id, recorded_at, location, speed_kmh, "
            "heading_degrees, battery_level_percent, fuel_level_percent, sensor_readings, "
            "diagnostic_codes, operational_status, environmental_conditions, custom_data) "
            f"SELECT * EXCEPT (schema_version) FROM file('{glob}', 'JSONEachRow', "
            "'telemetry_id String, vehicle_id String, recorded_at DateTime64(3), "
            "schema_version String, location Tuple(lat Float64, lon Float64), "
            "speed_kmh Float32, heading_degrees Float32, "
            "battery_level_percent Nullable(Float32), fuel_level_percent Nullable(Float32), "
            "sensor_readings String, diagnostic_codes Array(String), "
            "operational_status String, environmental_conditions String, custom_data String') "
            "SETTINGS input_format_allow_errors_ratio=0.1, input_format_allow_errors_num=1000000, "
            "input_format_json_read_objects_as_strings=1, date_time_input_format='best_effort'"
        )
        elapsed = time.perf_counter() - t0
        cpu = _cpu_seconds() - cpu
        rows = int(s.query("SELECT count() FROM b.t", "CSV").bytes().strip() or 0)
        s.close()
    return {"seconds": elapsed, "cpu_seconds": cpu, "rows": rows}


def _files(root: Path) -> list[str]:
    # Arrival order, as the landing sensor hands them over: same-minute files are batched.
    return sorted((str(p) for p in root.rglob("*.jsonl.gz")), key=lambda p: (p[-18:], p))


def _validator(module_file: Path | None) -> ModuleType:
    if module_file is None:
        from atlasmesh.telemetry import validate

        return validate
    spec = importlib.util.spec_from_file_location("compared_validate", module_file)
    if spec is None or spec.loader is None:
        raise SystemExit(f"--compare {module_file}: not a Python module file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def phase_validate_only(root: Path, module_file: Path | None = None) -> dict:
    """Validation, dedup and DLQ records alone: every result consumed, nothing written."""
    v = _validator(module_file)
    known = (root / "vehicles.txt").read_text().split()  # the fleet-core vehicle list
    totals = {"received": 0, "accepted": 0, "duplicates": 0, "dead_lettered": 0}
    reasons: dict[str, int] = {}
    cpu = _cpu_seconds()
    t0 = time.perf_counter()
    files = (v.LandingFile.from_path(f) for f in _files(root))
    for res in v.validate_files(files, known_vehicles=known):
        totals["received"] += res.received
        totals["accepted"] += res.accepted.num_rows
        totals["duplicates"] += res.duplicates
        totals["dead_lettered"] += res.dead_lettered
        for code, n in res.reason_counts.items():
            reasons[code] = reasons.get(code, 0) + n
    elapsed = time.perf_counter() - t0
    return {"seconds": elapsed, "cpu_seconds": _cpu_seconds() - cpu, **totals, "reasons": reasons}


def phase_validate(root: Path, out: Path, module_file: Path | None = None) -> dict:
    """Validation, dedup, DLQ, lake Parquet sink and chDB MergeTree sink."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from chdb import session

    v = _validator(module_file)
    files = _files(root)
    known = (root / "vehicles.txt").read_text().split()  # the fleet-core vehicle list
    writers: dict[str, pq.ParquetWriter] = {}

    def write(path: Path, table: pa.Table) -> None:
        key = str(path)
        if key not in writers:
            path.parent.mkdir(parents=True, exist_ok=True)
            writers[key] = pq.ParquetWriter(path, table.schema, compression="zstd")
        writers[key].write_table(table)

    totals = {"received": 0, "accepted": 0, "duplicates": 0, "dead_lettered": 0}
    reasons: dict[str, int] = {}
    sink_seconds = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        wh = session.Session(tmp)
        wh.query("CREATE DATABASE b")
        wh.query(_DDL.replace("CREATE TABLE t", "CREATE TABLE b.t"))
        cpu = _cpu_seconds()
        t0 = time.perf_counter()
        pending: list[pa.Table] = []
        results = v.validate_files(
            (v.LandingFile.from_path(f) for f in files), known_vehicles=known
        )
        for res in results:
            totals["received"] += res.received
            totals["accepted"] += res.accepted.num_rows
            totals["duplicates"] += res.duplicates
            totals["dead_lettered"] += res.dead_lettered
            for code, n in res.reason_counts.items():
                reasons[code] = reasons.get(code, 0) + n
            for hour, part in v.split_by_event_hour(res.accepted):
                write(
                    out / v.partition_path("processed/vehicle_telemetry", hour) / "batch.parquet",
                    part,
                )
            if res.dead_lettered:
                dlq = v.partition_path("dlq/vehicle_telemetry", res.arrival_time)
                write(out / dlq / "batch.parquet", res.dead_letters)
            pending.append(res.accepted)
            if sum(t.num_rows for t in pending) >= 50_000:
                sink_seconds += _insert(wh, pending)
                pending = []
        sink_seconds += _insert(wh, pending)
        for w in writers.values():
            w.close()
        elapsed = time.perf_counter() - t0
        cpu = _cpu_seconds() - cpu
        rows = int(wh.query("SELECT count() FROM b.t", "CSV").bytes().strip() or 0)
        wh.close()
    return {
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "warehouse_insert_seconds": sink_seconds,
        "rows": rows,
        **totals,
        "reasons": reasons,
    }


def _insert(wh: object, tables: list) -> float:
    import pyarrow as pa

    if not tables:
        return 0.0
    t0 = time.perf_counter()
    # chDB's Python() table function reads the local variable `batch` by name.
    batch = pa.concat_tables(tables).select(  # noqa: F841
        [
            "telemetry_id",
            "vehicle_id",
            "recorded_at",
            "ingested_at",
            "latitude",
            "longitude",
            "speed_kmh",
            "heading_degrees",
            "battery_level_percent",
            "fuel_level_percent",
            "sensor_readings",
            "diagnostic_codes",
            "operational_status",
            "environmental_conditions",
            "custom_data",
        ]
    )
    wh.query(  # type: ignore[attr-defined]
        "INSERT INTO b.t SELECT telemetry_id, vehicle_id, recorded_at, ingested_at, "
        "(latitude, longitude), speed_kmh, heading_degrees, battery_level_percent, "
        "fuel_level_percent, sensor_readings, diagnostic_codes, operational_status, "
        "environmental_conditions, ifNull(custom_data, '') FROM Python(batch)"
    )
    return time.perf_counter() - t0


def _cpu_seconds() -> float:
    # All threads of this process: less sensitive than wall time to a busy shared machine.
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _run_phase(phase: str, root: Path, out: Path, compare: Path | None = None) -> dict:
    cmd = [sys.executable, __file__, "--phase", phase, "--root", str(root), "--out-dir", str(out)]
    if compare is not None:
        cmd += ["--compare", str(compare)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{phase} phase failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _side(run: dict, lines: int) -> dict:
    out = {
        "seconds": round(run["seconds"], 2),
        "events_per_s": round(lines / run["seconds"]),
        "cpu_seconds": round(run["cpu_seconds"], 2),
        "cpu_us_per_event": round(run["cpu_seconds"] / lines * 1e6, 1),
        "peak_rss_mb": round(run["peak_rss_mb"]),
        "load_average_1m": run["load"],
    }
    for key in ("received", "accepted", "duplicates", "dead_lettered", "reasons"):
        if key in run:
            out[key] = run[key]
    if "received" in run:
        out["conserved"] = run["received"] == (
            run["accepted"] + run["duplicates"] + run["dead_lettered"]
        )
    return out


def _simulate_demo_day(home: Path) -> Path:
    """A demo-sized day of landing files (the simulator's CLI, as `make demo` runs it)."""
    exe = Path(sys.executable).with_name("atlasmesh")
    cmd = [str(exe), "simulate", "--seed", "7", "--vehicles", "36", "--days", "1"]
    env = {**os.environ, "ATLASMESH_HOME": str(home)}
    subprocess.run([*cmd, "--interval-s", "30"], env=env, check=True, capture_output=True)
    return home / "lake" / "landing" / "telemetry"


def _keep_all(v: ModuleType) -> object:
    """A deduplicator keeping every row, like staging's (duplicates are decided at build)."""
    import numpy as np

    class KeepAll(v.Deduplicator):  # type: ignore[name-defined,misc]
        def keep_mask(self, table: object) -> np.ndarray:
            return np.ones(table.num_rows, dtype=bool)  # type: ignore[attr-defined]

        def filter(self, table: object) -> tuple[object, int]:
            return table, 0

    return KeepAll()


def _timed_hour(v: ModuleType, files: list[tuple[str, bytes]], known: list[str]) -> tuple:
    """Wall and CPU seconds (all threads) to validate one arrival hour; and what it decided."""
    landing = [
        v.LandingFile(p, v.arrival_time_from_path(p), (lambda d=d: d), v.schema_folder_from_path(p))
        for p, d in files
    ]
    landing.sort(key=lambda f: (f.arrival_time, f.schema_folder or "", f.path))
    cpu, t0 = time.process_time(), time.perf_counter()
    totals = [0, 0, 0]
    for group in v.validate_file_groups(landing, known_vehicles=known, deduplicator=_keep_all(v)):
        totals[0] += group.accepted.num_rows
        totals[1] += group.dead_letters.num_rows
        totals[2] += sum(r.received for r in group.results)
    return time.perf_counter() - t0, time.process_time() - cpu, tuple(totals)


def _lines_of(data: bytes) -> bytes:
    """The complete lines of a landing file (the simulator also delivers cut gzip streams)."""
    import zlib

    try:
        text = zlib.decompressobj(wbits=31).decompress(data)
    except zlib.error:
        return b""
    return text[: text.rfind(b"\n") + 1]


def small_hours(compare: Path, rounds: int) -> None:
    """Per arrival hour of a demo day and for one large block: this validator vs `compare`."""
    import gzip as gz
    import sqlite3
    import statistics

    new, old = _validator(None), _validator(compare)
    with tempfile.TemporaryDirectory() as tmp:
        root = _simulate_demo_day(Path(tmp))
        with sqlite3.connect(Path(tmp) / "fleet_core.db") as db:
            known = [r[0] for r in db.execute("SELECT vehicle_id FROM vehicles")]
        hours: dict[str, list[tuple[str, bytes]]] = {}
        for p in sorted(root.rglob("*.jsonl.gz")):
            key = "/".join(p.parts[-3:-1])
            hours.setdefault(key, []).append((str(p), p.read_bytes()))
        day = b"".join(
            _lines_of(d) for p, d in sorted(f for fs in hours.values() for f in fs) if "v1" in p
        )
        # Arriving now, after every simulated event (the day ends now): no timestamp faults.
        now = datetime.now(UTC)
        big_name = (
            f"{root}/schema=v1/date={now:%Y-%m-%d}/hour={now:%H}/big-{now:%Y%m%dT%H%M}.jsonl.gz"
        )
        big = [(big_name, gz.compress(day, compresslevel=1))]
    sides = {"new": new, "old": old}
    for v in sides.values():  # once-per-process costs (imports, first Arrow export) out
        _timed_hour(v, next(iter(hours.values())), known)
    per_hour: dict[str, list[tuple[float, float]]] = {"new": [], "old": []}
    per_big: dict[str, list[tuple[float, float]]] = {"new": [], "old": []}
    same = True
    loads = [os.getloadavg()[0]]
    for r in range(rounds):
        for k, files in enumerate(hours.values()):
            order = ["new", "old"] if (r + k) % 2 == 0 else ["old", "new"]
            got = {}
            for name in order:
                wall, cpu, totals = _timed_hour(sides[name], files, known)
                per_hour[name].append((wall, cpu))
                got[name] = totals
            same &= got["new"] == got["old"]
        for name in ["new", "old"] if r % 2 == 0 else ["old", "new"]:
            wall, cpu, _ = _timed_hour(sides[name], big, known)
            per_big[name].append((wall, cpu))
        loads.append(os.getloadavg()[0])

    def med(xs: list[tuple[float, float]], i: int) -> float:
        return statistics.median(x[i] for x in xs)

    events = sum(_lines_of(d).count(b"\n") for fs in hours.values() for _, d in fs) / len(hours)
    result = {
        "benchmark": "validate_small_hours",
        "compared_validator": str(compare),
        "rounds": rounds,
        "arrival_hours": len(hours),
        "mean_lines_per_hour": round(events),
        "large_block_lines": day.count(b"\n"),
        "load_average_1m_seen": [round(min(loads), 2), round(max(loads), 2)],
        "same_totals": same,
    }
    for label, data in (("hour", per_hour), ("large_block", per_big)):
        for name in ("new", "old"):
            result[f"{label}_{name}_ms"] = {
                "wall_median": round(med(data[name], 0) * 1000, 1),
                "cpu_median": round(med(data[name], 1) * 1000, 1),
            }
        result[f"{label}_cpu_ratio_new_over_old"] = round(
            med(data["new"], 1) / med(data["old"], 1), 3
        )
        result[f"{label}_wall_ratio_new_over_old"] = round(
            med(data["new"], 0) / med(data["old"], 0), 3
        )
    out = RESULTS.with_name("validate_small_hours.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


_ODD_VALUES: list[object] = [
    None, 0, -0.0, 1, -1, 1.5, 1e308, -1e308, 360, 359.999, 90, 90.0000001, -90, 180, 1e3,
    "", "x", "1.5", "NaN", True, False, [], [1], ["P0A80"], ["bad"], {}, {"lat": 1},
    "2026-11-01T12:00:00Z", "2026-11-01T12:00:00+00:00", "2026-13-01T12:00:00Z",
    "2026-11-01 12:00:00Z", "zz", "driving", "parked", 1e-300, 2**63, -(2**63) - 1, 10**30,
    "00000000-0000-0000-0000-00000000000g",
]  # fmt: skip
_RAW_NUMBERS = [
    "NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1E400", "0.0e0", "-0", "1.0e-999",
    "123456789012345678901234567890", "01", "1.", ".5", "+1", "0x10", "1e", "--1", "true",
    "null", '"7"', "[]", "{}",
]  # fmt: skip
_FUZZ_KEYS = [
    "telemetry_id", "vehicle_id", "recorded_at", "schema_version", "location", "speed_kmh",
    "heading_degrees", "heading_deg", "battery_level_percent", "fuel_level_percent",
    "sensor_readings", "diagnostic_codes", "environmental_conditions", "operational_status",
    "custom_data", "odometer_km", "firmware_version", "lat", "lon", "motor_temp_c",
    "ambient_temp_c", "gateway_id",
]  # fmt: skip


def _hostile(rnd: random.Random, line: str, vids: list[str]) -> bytes:
    """One good line made hostile in one of many ways (values, tokens, structure, bytes)."""
    obj = json.loads(line)
    c = rnd.random()
    if c < 0.25:  # odd values anywhere, nested ones included, or absent keys
        for _ in range(rnd.randint(1, 3)):
            key, target = rnd.choice(_FUZZ_KEYS), obj
            for parent in ("location", "sensor_readings", "environmental_conditions"):
                if isinstance(obj.get(parent), dict) and key in obj[parent]:
                    target = obj[parent]
            if rnd.random() < 0.15:
                target.pop(key, None)
            else:
                target[key] = json.loads(json.dumps(rnd.choice(_ODD_VALUES)))
        return json.dumps(obj, separators=(",", ":")).encode()
    if c < 0.4:  # a raw number-ish token in a numeric field
        key = rnd.choice(["speed_kmh", "lat", "lon", "motor_temp_c", "heading_degrees"])
        text = json.dumps(obj, separators=(",", ":"))
        at = text.find(f'"{key}":')
        if at < 0:
            return text.encode()
        start = end = at + len(key) + 3
        while end < len(text) and text[end] not in ",}":
            end += 1
        return (text[:start] + rnd.choice(_RAW_NUMBERS) + text[end:]).encode()
    if c < 0.55:  # structure: cut, brace-less, unquoted key, commas, look-alikes in strings
        v = rnd.randrange(9)
        if v == 0:
            line = line[: rnd.randrange(1, len(line))]
        elif v == 1:
            line = line[:-1]
        elif v == 2:
            line = line.replace('"speed_kmh"', "speed_kmh", 1)
        elif v == 3:
            line = line.replace(",", ",,", rnd.randint(1, 2))
        elif v == 4:
            line = line[:-1] + ",}"
        elif v == 5:
            line += "}"
        elif v == 6:
            odd = '"note":"a, b {c ,d ,,e ,x",' + ('"q":{x},' if rnd.random() < 0.5 else "")
            line = line.replace('"custom_data":{', '"custom_data":{' + odd, 1)
        elif v == 7:
            line = line.replace('{"lat"', "{lat", 1)
        else:
            line = "[" + line + "]" if rnd.random() < 0.5 else json.dumps(line)
        return line.encode()
    if c < 0.65:  # whitespace, duplicate keys, escapes, CRLF, non-ASCII
        seps = rnd.choice([(", ", ": "), (",", ":"), (" ,\t", " :  ")])
        text = json.dumps(obj, separators=seps)
        v = rnd.randrange(6)
        if v == 0:
            text = text[:-1] + ', "speed_kmh": 5}'
        elif v == 1:
            text = text.replace('"driving"', '"driv\\u0069ng"', 1)
            text = text.replace('"parked"', '"\\ud800"', 1)
        elif v == 2:
            text += "\r"
        elif v == 3:
            text = text.replace('"gateway_id"', '"t": "caf\u00e9 \u2603", "gateway_id"', 1)
        elif v == 4:
            text = "  " + text + "  "
        else:
            text = text.replace('"gw', '"g\\"w', 1)
        return text.encode()
    if c < 0.7:  # bytes: invalid UTF-8, control byte, empty, blank, oversized
        raw = line.encode()
        v = rnd.randrange(5)
        if v == 0:
            return raw.replace(b"gw-", b"g\xffw-", 1)
        if v == 1:
            return raw.replace(b"gw-", b"g\x01w-", 1)
        if v in (2, 3):
            return b"" if v == 2 else b"   "
        pad = b"x" * rnd.choice([100, 70_000, 1_100_000])
        return raw[:-1] + b',"pad":"' + pad + b'"}'
    if c < 0.8:  # versions, alias swaps, odd parents
        versions = ["1.0.0", "2.0.0", "1.2.3", "3.0.0", "01.0.0", "1.0", None, 1, " 1.0.0"]
        obj["schema_version"] = rnd.choice(versions)
        if rnd.random() < 0.5:
            for a, b in (("heading_deg", "heading_degrees"), ("heading_degrees", "heading_deg")):
                if a in obj:
                    obj[b] = obj.pop(a)
                    break
        if rnd.random() < 0.3:
            obj["location"] = rnd.choice([None, [1, 2], {"lat": None, "lon": 1}, {"lon": 2}])
        if rnd.random() < 0.3:
            obj["sensor_readings"] = rnd.choice([None, {}, {"motor_temp_c": None}, "x"])
        return json.dumps(obj, separators=(",", ":")).encode()
    if c < 0.9:  # timestamps and vehicles
        obj["recorded_at"] = rnd.choice(
            [
                "2026-11-01T12:10:00Z", "2026-12-01T00:00:00Z", "2026-09-01T00:00:00Z",
                "2026-11-01T11:00:00.123456789Z", "2026-11-01T12:00:00.5+00:00",
                "2026-11-01T12:00:00.5+01:00", "2026-02-30T00:00:00Z", "bad",
            ]
        )  # fmt: skip
        obj["vehicle_id"] = rnd.choice([*vids, vids[0].upper(), "nope"])
        return json.dumps(obj, separators=(",", ":")).encode()
    return line.encode()


def _fuzz_files(rnd: random.Random, vids: list[str]) -> list[tuple[str, datetime, bytes, str]]:
    """A few landing files of one arrival hour (several minutes, both folders)."""
    files = []
    hour = START + timedelta(hours=rnd.randrange(3))
    rate = rnd.choice([0.0, 0.02, 0.1, 0.3, 1.0])
    for f in range(rnd.choice([1, 1, 2, 3, 5, 8])):
        folder = rnd.choice(["v1", "v2", "v1", "v3"] if rnd.random() < 0.1 else ["v1", "v2"])
        arrival = hour + timedelta(minutes=rnd.randrange(60))
        lines = []
        for k in range(rnd.choice([0, 1, 3, 20, 60, 200])):
            ts = arrival - timedelta(seconds=rnd.randrange(0, 300))
            v2 = (folder == "v2") != (rnd.random() < 0.05)
            line = _event(rnd, vids[k % len(vids)], k, ts, k % 5, v2)
            raw = _hostile(rnd, line, vids) if rnd.random() < rate else line.encode()
            lines.append(raw)
            if rnd.random() < 0.03:
                lines.append(raw)  # delivered twice
        data = b"\n".join(lines) + (b"\n" if rnd.random() < 0.8 else b"")
        if rnd.random() < 0.8:
            data = gzip.compress(data, mtime=0)
            roll = rnd.random()
            if roll < 0.08:
                data = data[: rnd.randrange(10, max(11, len(data)))]  # cut upload
            elif roll < 0.11:
                data = data[:20] + b"\x00garbage" + data[28:]
            elif roll < 0.14:
                data += b"trailing junk"
        name = f"gw-{f:02d}-{arrival:%Y%m%dT%H%M}.jsonl.gz"
        path = f"/landing/schema={folder}/date={arrival:%Y-%m-%d}/hour={arrival:%H}/{name}"
        files.append((path, arrival, data, folder))
    files.sort(key=lambda t: (t[1], t[3], t[0]))
    return files


def _everything(
    v: ModuleType, files: list[tuple[str, datetime, bytes, str]], base: bool, known: object
) -> list[tuple]:
    """Every group and per-file result of `validate_file_groups` (and `validate_batch`)."""
    landing = [v.LandingFile(p, a, (lambda d=d: d), f) for p, a, d, f in files]
    dedup = v.Deduplicator() if base else _keep_all(v)
    out: list[tuple] = []
    try:
        for g in v.validate_file_groups(landing, known_vehicles=known, deduplicator=dedup):
            out.append(("group", g.accepted, g.dead_letters))
            out.extend(
                (r.source_file, r.arrival_time, r.accepted, r.dead_letters, r.duplicates,
                 r.received, r.truncated, r.empty, r.notes)
                for r in g.results
            )  # fmt: skip
        if len(files) == 1:
            p, a, data, f = files[0]
            r = v.validate_batch(
                data, source_file=p, arrival_time=a, known_vehicles=known, schema_folder=f
            )
            out.append(("batch", r.accepted, r.dead_letters, r.duplicates, r.received, r.notes))
    except Exception as exc:  # an error must be the same error
        out.append(("error", type(exc).__name__, str(exc)))
    return out


def _identical(a: list[tuple], b: list[tuple]) -> bool:
    import pyarrow as pa

    if len(a) != len(b) or any(len(x) != len(y) for x, y in zip(a, b, strict=True)):
        return False
    for x, y in zip(a, b, strict=True):
        for u, w in zip(x, y, strict=True):
            if isinstance(u, pa.Table):
                if not (
                    isinstance(w, pa.Table)
                    and u.schema.equals(w.schema, check_metadata=True)
                    and u.equals(w)
                ):
                    return False
            elif u != w:
                return False
    return True


def fuzz(compare: Path, batches: int, seed: int) -> None:
    """Validate fuzzed batches with this validator and `compare`; exit 1 on any difference."""
    new, old = _validator(None), _validator(compare)
    rnd = random.Random(seed)
    vids = [str(uuid.UUID(int=rnd.getrandbits(128), version=4)) for _ in range(12)]
    known = [*vids[:10], vids[10].upper()]  # vids[11] is not in the fleet
    differing, rows, dead = [], 0, 0
    reasons: dict[str, int] = {}
    for k in range(batches):
        files = _fuzz_files(rnd, vids)
        fleet, base = rnd.choice([None, known]), rnd.random() < 0.5
        a = _everything(old, files, base, fleet)
        if not _identical(a, _everything(new, files, base, fleet)):
            differing.append(k)
        for item in a:
            if item[0] == "group":
                rows += item[1].num_rows
                dead += item[2].num_rows
                for code in item[2].column("reason_code").to_pylist():
                    reasons[code] = reasons.get(code, 0) + 1
    print(
        f"{batches} batches (seed {seed}): {len(differing)} differing {differing[:20]}; "
        f"old accepted {rows:,} rows, dead-lettered {dead:,}: {dict(sorted(reasons.items()))}"
    )
    if differing:
        raise SystemExit(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_200_000)
    ap.add_argument("--vehicles", type=int, default=1000)
    ap.add_argument("--gateways", type=int, default=20)
    ap.add_argument("--fault-rate", type=float, default=0.01)
    ap.add_argument("--repeat", type=int, default=2, help="best of N runs per side")
    ap.add_argument("--compare", type=Path, help="another validate.py to time (validate only)")
    ap.add_argument("--phase", choices=["baseline", "validate", "validate_only"])
    ap.add_argument("--root", type=Path)
    ap.add_argument("--out-dir", type=Path)
    ap.add_argument("--small-hours", action="store_true", help="fixed cost per block vs --compare")
    ap.add_argument("--fuzz", type=int, metavar="N", help="parity check: N fuzzed batches")
    ap.add_argument("--seed", type=int, default=1, help="seed of --fuzz")
    args = ap.parse_args()
    if args.fuzz:
        if args.compare is None or not args.compare.is_file():
            raise SystemExit("--fuzz needs --compare <previous validate.py>")
        fuzz(args.compare, args.fuzz, args.seed)
        return
    if args.small_hours:
        if args.compare is None or not args.compare.is_file():
            raise SystemExit("--small-hours needs --compare <previous validate.py>")
        small_hours(args.compare, args.repeat)
        return
    if args.phase:
        load = os.getloadavg()[0]
        if args.phase == "baseline":
            result = phase_baseline(args.root)
        elif args.phase == "validate":
            result = phase_validate(args.root, args.out_dir, args.compare)
        else:
            result = phase_validate_only(args.root, args.compare)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        result["load"] = [round(load, 2), round(os.getloadavg()[0], 2)]
        print(json.dumps(result))
        return
    if args.compare is not None and not args.compare.is_file():
        raise SystemExit(f"--compare {args.compare}: no such file")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "landing" / "telemetry"
        t0 = time.perf_counter()
        gen = generate(root, args.events, args.vehicles, args.gateways, args.fault_rate)
        gen_s = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in root.rglob("*.gz"))
        runs: dict[str, list[dict]] = {"baseline": [], "validate_only": [], "validate": []}
        if args.compare:
            runs["compared"] = []
            runs["compared_whole_path"] = []
        for k in range(args.repeat):  # interleaved, so machine load hits every side alike
            runs["baseline"].append(_run_phase("baseline", root, Path(tmp) / "out-b"))
            runs["validate_only"].append(_run_phase("validate_only", root, Path(tmp) / "o"))
            runs["validate"].append(_run_phase("validate", root, Path(tmp) / f"out-{k}"))
            if args.compare:
                runs["compared"].append(
                    _run_phase("validate_only", root, Path(tmp) / "o", args.compare)
                )
                runs["compared_whole_path"].append(
                    _run_phase("validate", root, Path(tmp) / f"cmp-{k}", args.compare)
                )
    best = {name: min(rs, key=lambda r: r["seconds"]) for name, rs in runs.items()}
    lines = gen["lines"]
    base = best["baseline"]
    full = _side(best["validate"], lines)
    full["warehouse_insert_seconds"] = round(best["validate"]["warehouse_insert_seconds"], 2)
    result = {
        "benchmark": "validate",
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "load_average_1m_seen": [
            min(min(r["load"]) for rs in runs.values() for r in rs),
            max(max(r["load"]) for rs in runs.values() for r in rs),
        ],
        "events": lines,
        "landing_files_gz_mb": round(size / 2**20, 1),
        "generation_seconds": round(gen_s, 1),
        "injected_faults": gen["injected"],
        "baseline_chdb_jsoneachrow_to_mergetree": {
            **_side(base, lines),
            "rows_loaded": base["rows"],
        },
        "validate_only": _side(best["validate_only"], lines),
        "validate_dedup_dlq_parquet_and_mergetree": full,
        "ratio_vs_baseline": round(base["seconds"] / best["validate"]["seconds"], 3),
        "validate_only_ratio_vs_baseline": round(
            base["seconds"] / best["validate_only"]["seconds"], 3
        ),
        "goal": "ratio >= 0.5; peak RSS < 1 GB for an hour of 1,000 vehicles",
        "all_runs_seconds": {k: [round(r["seconds"], 2) for r in v] for k, v in runs.items()},
    }
    if args.compare:
        cmp, cmp_full = best["compared"], best["compared_whole_path"]
        result["compared_validator"] = {
            "module": str(args.compare),
            "validate_only": _side(cmp, lines),
            "whole_path": _side(cmp_full, lines),
            "ratio_vs_baseline": round(base["seconds"] / cmp_full["seconds"], 3),
        }
        result["validate_only_speedup_vs_compared"] = round(
            cmp["seconds"] / best["validate_only"]["seconds"], 2
        )
        result["whole_path_speedup_vs_compared"] = round(
            cmp_full["seconds"] / best["validate"]["seconds"], 2
        )
        result["compared_same_totals"] = all(
            cmp[k] == best["validate_only"][k]
            for k in ("received", "accepted", "duplicates", "dead_lettered", "reasons")
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    rows = [
        ("chDB JSONEachRow -> MergeTree (no checks)", best["baseline"]),
        ("validate + dedup + DLQ (this validator)", best["validate_only"]),
        ("... + Parquet + MergeTree (whole path)", best["validate"]),
    ]
    if args.compare:
        rows.append((f"validate + dedup + DLQ ({args.compare.name})", best["compared"]))
        rows.append((f"... + Parquet + MergeTree ({args.compare.name})", cmp_full))
    print(f"{'side':<46}{'seconds':>9}{'events/s':>11}{'CPU s':>8}{'RSS MB':>8}{'ratio':>7}")
    for name, r in rows:
        print(
            f"{name:<46}{r['seconds']:>9.2f}{lines / r['seconds']:>11,.0f}"
            f"{r['cpu_seconds']:>8.1f}{r['peak_rss_mb']:>8.0f}"
            f"{base['seconds'] / r['seconds']:>7.3f}"
        )
    print(
        f"ratio = baseline time / side time; baseline loaded {base['rows']:,} of {lines:,} "
        f"lines; whole path conserved: {full['conserved']}; load average "
        f"{result['load_average_1m_seen'][0]}-{result['load_average_1m_seen'][1]}"
    )
    if args.compare:
        print(
            f"vs {args.compare.name}: validate only {result['validate_only_speedup_vs_compared']}x"
            f", whole path {result['whole_path_speedup_vs_compared']}x faster; same totals: "
            f"{result['compared_same_totals']}"
        )
    print(
        f"events {lines:,}; dead-lettered {full['dead_lettered']:,}; duplicates {full['duplicates']:,}"
    )
    print(f"results: {RESULTS}")


if __name__ == "__main__":
    main()
