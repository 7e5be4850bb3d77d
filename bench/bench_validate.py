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
    args = ap.parse_args()
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
