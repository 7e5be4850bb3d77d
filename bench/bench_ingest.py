"""Benchmark: landing -> processed -> warehouse ingest vs chDB bulk-loading the same JSON lines.

For each size, the simulator writes gzip landing files (1,000 vehicles at 1 Hz by default,
v1 and v2 firmware, 1% faults of every line-level class the baseline engine survives: not
cut lines, cut uploads or non-object lines, see BENCH_FAULT_MIX). Then, on the SAME
files and in one run, each step in its own process (clean peak RSS; one owner per chDB
directory):

- baseline: chDB `INSERT INTO <MergeTree> SELECT * FROM file('<glob>', 'JSONEachRow',
  '<structure>')`: the engine's own bulk load, no validation, no dedup, no dead letters;
- ours: `stage_arrival_hour` per arrival hour, `build_event_hour` per touched event hour,
  then `load_hour_from_lake` per event hour through the embedded warehouse service (atomic
  partition swap + metrics), as the platform loads; the service's peak RSS is reported
  apart and its CPU counted with ours.

Step times are measured inside each process around the call (imports and process start
excluded on both sides). Reported: events/s, ratio baseline time / our time (goal >= 0.5),
peak RSS per step (goal < 1 GB for 3.6 M events, <= 1.5x that at 10x the events), the
machine's load average. Results merge into bench/results/ingest.json by size.

    .venv/bin/python bench/bench_ingest.py                  # 1m and 3.6m (~20 min here)
    .venv/bin/python bench/bench_ingest.py --sizes 10m      # ~30 min here
    .venv/bin/python bench/bench_ingest.py --sizes 30m,36m  # long: ~1.5 h each, not run yet
    .venv/bin/python bench/bench_ingest.py --sizes 3.6m@3000  # 3,000 vehicles (1.2 h)
    .venv/bin/python bench/bench_ingest.py --report         # print the saved table

A size is EVENTS[@VEHICLES]; the simulated period is EVENTS / VEHICLES seconds. Landing
files are kept in --work-dir (default /tmp/atlasmesh-bench-ingest) and reused by later runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from _process import cpu_seconds, free_port, peak_rss_mb

from atlasmesh.telemetry.reasons import FaultClass

START = datetime(2026, 11, 1, tzinfo=UTC)
RESULTS = Path(__file__).parent / "results" / "ingest.json"
WORK = Path("/tmp/atlasmesh-bench-ingest")
# ClickHouse's JSONEachRow reader skips bad lines (input_format_allow_errors_*) except an
# unterminated object at the end of a file and a line that is a JSON array (it then reads
# the stream as one array): either fails the whole INSERT. Cut uploads, cut lines and
# non-object lines (all tested in tests/) are left out so that the baseline can run at all.
_ENGINE_BREAKING = (FaultClass.TRUNCATED_FILE, FaultClass.MALFORMED_JSON, FaultClass.NOT_AN_OBJECT)
BENCH_FAULT_MIX = {f: 1.0 for f in FaultClass if f not in _ENGINE_BREAKING}
GOAL_RATIO = 0.5
GOAL_RSS_MB = 1024

# Every wire field of v1 and v2; nested objects are read as JSON text, as we store them.
STRUCTURE = (
    "telemetry_id String, vehicle_id String, recorded_at DateTime64(3, 'UTC'), "
    "schema_version String, location Tuple(lat Float64, lon Float64), speed_kmh Float64, "
    "heading_degrees Nullable(Float64), heading_deg Nullable(Float64), "
    "battery_level_percent Nullable(Float64), fuel_level_percent Nullable(Float64), "
    "odometer_km Nullable(Float64), firmware_version Nullable(String), sensor_readings String, "
    "diagnostic_codes Array(String), environmental_conditions String, "
    "operational_status String, custom_data String"
)
BASELINE_SETTINGS = (
    "input_format_json_read_objects_as_strings = 1, input_format_skip_unknown_fields = 1, "
    "date_time_input_format = 'best_effort', input_format_allow_errors_num = 1000000000, "
    "input_format_allow_errors_ratio = 0.5"
)


def parse_size(text: str, vehicles: int) -> tuple[str, int, int]:
    """`3.6m`, `100k`, `10m@3000` -> (label, events, vehicles)."""
    label = text.strip().lower()
    amount, _, fleet = label.partition("@")
    scale = {"k": 1_000, "m": 1_000_000}.get(amount[-1:], 1)
    try:
        events = round(float(amount.rstrip("km")) * scale)
        vehicles = int(fleet) if fleet else vehicles
    except ValueError:
        raise SystemExit(f"size {text!r}: write EVENTS[@VEHICLES], e.g. 3.6m or 10m@3000") from None
    if events < vehicles:
        raise SystemExit(f"size {text!r}: fewer events than vehicles ({vehicles})")
    return label, events, vehicles


# --- child phases (each runs in its own process) ---------------------------------------------


def _lake(root: Path):
    from atlasmesh.lake import Lake

    return Lake(f"file://{root / 'lake'}")


def phase_generate(root: Path, events: int, vehicles: int, fault_rate: float) -> dict:
    from atlasmesh.fleet_core.store import FleetCoreStore
    from atlasmesh.simulator import SimConfig, simulate

    config = SimConfig(
        seed=2026,
        vehicles=vehicles,
        days=events / vehicles / 86_400,
        start=START,
        interval_s=1.0,
        fault_rate=fault_rate,
        fault_mix=BENCH_FAULT_MIX,
        truncated_file_rate=0.0,
    )
    t0 = time.perf_counter()
    with FleetCoreStore(f"sqlite:///{root / 'fleet_core.db'}") as store:
        summary = simulate(config, lake=_lake(root), store=store, truth_dir=root / "truth")
        known = [row["vehicle_id"] for row in store.read("vehicles")]
    (root / "vehicles.json").write_text(json.dumps(known))
    return {
        "seconds": time.perf_counter() - t0,
        "events": summary.events,
        "lines": summary.lines,
        "files": summary.files,
        "gzip_bytes": summary.gzip_bytes,
        "raw_bytes": summary.raw_bytes,
        "faults": summary.faults,
    }


def phase_baseline(root: Path) -> dict:
    from chdb import session

    glob = f"{root}/lake/landing/telemetry/schema=*/date=*/hour=*/*.jsonl.gz"
    scratch = root / "baseline-chdb"
    shutil.rmtree(scratch, ignore_errors=True)
    s = session.Session(str(scratch))
    try:
        s.query("CREATE DATABASE b")
        s.query(
            f"CREATE TABLE b.t ({STRUCTURE}) ENGINE = MergeTree ORDER BY (vehicle_id, recorded_at)"
        )
        quoted = STRUCTURE.replace("'", "\\'")
        t0 = time.perf_counter()
        s.query(
            f"INSERT INTO b.t SELECT * FROM file('{glob}', 'JSONEachRow', '{quoted}') "
            f"SETTINGS {BASELINE_SETTINGS}"
        )
        seconds = time.perf_counter() - t0
        rows = int(s.query("SELECT count() FROM b.t", "CSV").bytes().strip() or 0)
    finally:
        s.close()
        shutil.rmtree(scratch, ignore_errors=True)
    return {"seconds": seconds, "rows": rows}


def phase_stage(root: Path, hour: datetime) -> dict:
    from atlasmesh.telemetry.pipeline import stage_arrival_hour

    known = json.loads((root / "vehicles.json").read_text())
    t0 = time.perf_counter()
    result = stage_arrival_hour(_lake(root), hour, known_vehicles=known)
    return {"seconds": time.perf_counter() - t0, **result.metadata()}


def phase_build(root: Path, hour: datetime) -> dict:
    from atlasmesh.telemetry.pipeline import build_event_hour

    t0 = time.perf_counter()
    result = build_event_hour(_lake(root), hour, work_dir=root)
    return {"seconds": time.perf_counter() - t0, **result.metadata()}


def _warehouse_settings(root: Path):
    from atlasmesh.settings import Settings

    return Settings(home=root / "warehouse-home", warehouse_port=int(os.environ["BENCH_WH_PORT"]))


def phase_load(root: Path, hour: datetime) -> dict:
    from atlasmesh.warehouse.client import connect
    from atlasmesh.warehouse.telemetry import load_hour_from_lake

    client = connect(_warehouse_settings(root))
    t0 = time.perf_counter()
    result = load_hour_from_lake(client, _lake(root), hour, load_id=f"bench-{hour:%Y%m%d%H}")
    return {
        "seconds": time.perf_counter() - t0,
        "rows": result.rows,
        "read_from_lake": result.read_from_lake,
    }


def _child(args: argparse.Namespace) -> None:
    root = args.root
    hour = datetime.fromisoformat(args.hour) if args.hour else None
    if args.phase == "generate":
        out = phase_generate(root, args.events, args.vehicles, args.fault_rate)
    elif args.phase == "baseline":
        out = phase_baseline(root)
    else:
        out = {"stage": phase_stage, "build": phase_build, "load": phase_load}[args.phase](
            root, hour
        )
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out["peak_rss_mb"] = peak_rss_mb()
    # CPU seconds of the whole process (imports included): on a shared, overloaded machine
    # they show the work done where wall time mostly shows the neighbours.
    out["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    print(json.dumps(out, default=str))


# --- the driver ------------------------------------------------------------------------------


def run_child(phase: str, root: Path, *extra: str) -> dict:
    load = os.getloadavg()[0]
    proc = subprocess.run(
        [sys.executable, __file__, "--phase", phase, "--root", str(root), *extra],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{phase} {' '.join(extra)} failed:\n{proc.stderr[-4000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["loadavg_1m"] = round(load, 2)
    return out


def run_size(label: str, events: int, vehicles: int, args: argparse.Namespace) -> dict:
    from atlasmesh.telemetry.pipeline import list_arrival_hours

    root = args.work_dir / label.replace("@", "-v")
    marker = root / "generated.json"
    wanted = {
        "events": events,
        "vehicles": vehicles,
        "fault_rate": args.fault_rate,
        "fault_mix": sorted(BENCH_FAULT_MIX),
    }
    if marker.exists() and json.loads(marker.read_text()).get("wanted") == wanted:
        gen = json.loads(marker.read_text())["result"]
        print(f"[{label}] reusing landing files in {root}", flush=True)
    else:
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        print(f"[{label}] simulating {events:,} events ({vehicles} vehicles) ...", flush=True)
        gen = run_child(
            "generate",
            root,
            *("--events", str(events), "--vehicles", str(vehicles)),
            *("--fault-rate", str(args.fault_rate)),
        )
        marker.write_text(json.dumps({"wanted": wanted, "result": gen}))
    # A fresh pipeline output every run: staging/processed/dlq/manifests and the warehouse.
    for name in ("staging", "processed", "dlq", "manifests", ".staging"):
        shutil.rmtree(root / "lake" / name, ignore_errors=True)
    shutil.rmtree(root / "warehouse-home", ignore_errors=True)

    print(f"[{label}] baseline: chDB JSONEachRow -> MergeTree ...", flush=True)
    base = run_child("baseline", root)
    arrival_hours = list_arrival_hours(_lake(root)).arrival_hours
    stages, builds, loads = [], [], []
    event_hours: set[str] = set()
    for hour in arrival_hours:
        print(f"[{label}] stage {hour:%Y-%m-%dT%H}", flush=True)
        stages.append(run_child("stage", root, "--hour", hour.isoformat()))
        event_hours.update(stages[-1]["event_hours"], stages[-1]["removed_event_hours"])
    # Loads go through the embedded warehouse service, as the platform's do: the engine's
    # memory is the service's (reported apart), the loader's is its own.
    from atlasmesh.warehouse import service

    os.environ["BENCH_WH_PORT"] = str(free_port())
    wh = _warehouse_settings(root)
    service.serve(wh)
    try:
        for iso in sorted(event_hours):
            hour = datetime.fromisoformat(iso.replace("Z", "+00:00")).isoformat()
            print(f"[{label}] build + load {iso}", flush=True)
            builds.append(run_child("build", root, "--hour", hour))
            loads.append(run_child("load", root, "--hour", hour))
        wh_pid = service.pid(wh)
        service_peak = peak_rss_mb(wh_pid) if wh_pid else 0.0
        # The engine's work during the loads is the service's CPU (its start is a sliver).
        service_cpu = cpu_seconds(wh_pid) if wh_pid else 0.0
    finally:
        service.stop(wh)

    received = sum(s["received"] for s in stages)
    accepted = sum(b["accepted"] for b in builds)
    duplicates = sum(s["duplicates"] for s in stages) + sum(b["duplicates"] for b in builds)
    dead = sum(s["dead_lettered"] for s in stages)
    seconds = {
        "stage": sum(s["seconds"] for s in stages),
        "build": sum(b["seconds"] for b in builds),
        "load": sum(x["seconds"] for x in loads),
    }
    ours = sum(seconds.values())
    ours_cpu = sum(x["cpu_seconds"] for x in stages + builds + loads) + service_cpu
    lake_only = seconds["stage"] + seconds["build"]
    loadavgs = [base["loadavg_1m"]] + [x["loadavg_1m"] for x in stages + builds + loads]
    return {
        "label": label,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "events": gen["lines"],
        "vehicles": vehicles,
        "arrival_hours": len(stages),
        "event_hours": len(builds),
        "landing_files": gen["files"],
        "landing_gzip_mb": round(gen["gzip_bytes"] / 2**20, 1),
        "generation_seconds": round(gen["seconds"], 1),
        "baseline": {
            "what": "chDB INSERT INTO MergeTree SELECT * FROM file(JSONEachRow), no checks",
            "seconds": round(base["seconds"], 2),
            "events_per_s": round(gen["lines"] / base["seconds"]),
            "rows_loaded": base["rows"],
            "peak_rss_mb": round(base["peak_rss_mb"]),
            "cpu_seconds": round(base["cpu_seconds"], 1),
            "loadavg_1m": base["loadavg_1m"],
        },
        "ours": {
            "what": "stage (validate, DLQ) + build (cross-arrival dedup) + load_hour_from_lake",
            "seconds": {k: round(v, 2) for k, v in seconds.items()} | {"total": round(ours, 2)},
            "events_per_s": round(received / ours),
            "events_per_s_lake_only": round(received / lake_only),
            "cpu_seconds": round(ours_cpu, 1),
            "peak_rss_mb": {
                "stage": round(max(s["peak_rss_mb"] for s in stages)),
                "build": round(max(b["peak_rss_mb"] for b in builds)),
                "load": round(max(x["peak_rss_mb"] for x in loads)),
                "warehouse_service": round(service_peak),
            },
            "read_from_lake": all(x.get("read_from_lake") for x in loads),
            "received": received,
            "accepted": accepted,
            "duplicates": duplicates,
            "dead_lettered": dead,
            "conserved": received == accepted + duplicates + dead,
            "rows_loaded": sum(x["rows"] for x in loads),
            "max_build_buckets": max(b["dedup_buckets"] for b in builds) if builds else 0,
        },
        "ratio_vs_baseline": round(base["seconds"] / ours, 3),
        "ratio_vs_baseline_lake_only": round(base["seconds"] / lake_only, 3),
        # Less sensitive to the neighbours than wall time; process start and imports included.
        "ratio_vs_baseline_cpu": round(base["cpu_seconds"] / ours_cpu, 3),
        "loadavg_1m": {"min": min(loadavgs), "max": max(loadavgs)},
        "per_step": {"stage": stages, "build": builds, "load": loads},
    }


def report(results: dict) -> None:
    rows = sorted(results["sizes"].values(), key=lambda r: r["events"])
    head = (
        f"{'size':>9} {'events':>11} {'base s':>8} {'stage s':>8} {'build s':>8} {'load s':>7} "
        f"{'ours ev/s':>10} {'base ev/s':>10} {'ratio':>6} {'RSS st/bu/ld/wh MB':>22} {'load avg':>10}"
    )
    print(head)
    for r in rows:
        o, s = r["ours"], r["ours"]["seconds"]
        rss = "/".join(
            str(o["peak_rss_mb"].get(k, "-"))
            for k in ("stage", "build", "load", "warehouse_service")
        )
        la = r["loadavg_1m"]
        print(
            f"{r['label']:>9} {r['events']:>11,} {r['baseline']['seconds']:>8} {s['stage']:>8} "
            f"{s['build']:>8} {s['load']:>7} {o['events_per_s']:>10,} "
            f"{r['baseline']['events_per_s']:>10,} {r['ratio_vs_baseline']:>6} {rss:>22} "
            f"{la['min']:>4}-{la['max']:<5}"
        )
    print("CPU seconds per million events (baseline / ours; steady = linear cost):")
    for r in rows:
        per_m = 1e6 / r["events"]
        base, ours = r["baseline"]["cpu_seconds"] * per_m, r["ours"]["cpu_seconds"] * per_m
        print(
            f"  {r['label']:>9}: {base:6.1f} / {ours:6.1f}   "
            f"(ratio {r['ratio_vs_baseline_cpu']}, lake only wall ratio "
            f"{r['ratio_vs_baseline_lake_only']})"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1m,3.6m", help="comma-separated EVENTS[@VEHICLES]")
    ap.add_argument("--vehicles", type=int, default=1000)
    ap.add_argument("--fault-rate", type=float, default=0.01)
    ap.add_argument("--work-dir", type=Path, default=WORK)
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--phase", choices=["generate", "baseline", "stage", "build", "load"])
    ap.add_argument("--root", type=Path)
    ap.add_argument("--hour")
    ap.add_argument("--events", type=int)
    ap.add_argument("--report", action="store_true", help="print the saved results only")
    args = ap.parse_args()
    if args.phase:
        _child(args)
        return
    if args.report:
        report(json.loads(args.results.read_text()))
        return

    results = json.loads(args.results.read_text()) if args.results.exists() else {}
    results.setdefault("sizes", {})
    results.update(
        benchmark="ingest",
        machine={"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        goals={
            "ratio_vs_baseline_min": GOAL_RATIO,
            "peak_rss_mb_3_6m_max": GOAL_RSS_MB,
            "peak_rss_at_10x_events_max": "1.5x the 3.6m figure",
            "cost_growth": "linear in events",
        },
        fault_rate=args.fault_rate,
    )
    for text in args.sizes.split(","):
        label, events, vehicles = parse_size(text, args.vehicles)
        results["sizes"][label] = run_size(label, events, vehicles, args)
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps(results, indent=2) + "\n")
    report(results)
    print(f"results: {args.results}")


if __name__ == "__main__":
    main()
