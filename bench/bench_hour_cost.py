"""Benchmark: the fixed cost per hour of staging and publishing demo-sized telemetry.

A demo hour is small (36 vehicles every 30 s: ~4,300 events, ~70-100 gateway files), so
what it costs is mostly fixed per hour: validation calls, file writes, HTTP round trips
to the warehouse. This bench simulates such a landing set once, then, in one run and
on the same files, times the code of a baseline git revision (default: the commit before
the per-hour cuts) against the working tree, each side in fresh processes as Dagster's
range runs use them (one process stages every arrival hour in sequence, another builds
and loads every event hour), interleaved round by round:

- stage: `stage_arrival_hour` per arrival hour;
- publish: `build_event_hour` then `load_hour_from_lake` per event hour (what
  `assets/ingest.py` does now);
- publish-range (working tree only): `build_event_hour` per hour, then
  `load_hours_from_lake` per day of hours (what a range run can do with it).

Each side loads into its own warehouse database of one embedded warehouse service started
for the run. Reported per hour: wall seconds, CPU seconds of the step process (all its
threads) and of the warehouse service, HTTP requests; per process: import time and whether
pandas was imported. Both sides must produce the same counts and checksums. Ratios are
working tree / baseline (lower is better); the machine's load average is recorded around
every step. Results go to bench/results/hour_cost.json.

    .venv/bin/python bench/bench_hour_cost.py                       # 2 days, 2 rounds (~4 min)
    .venv/bin/python bench/bench_hour_cost.py --days 3 --rounds 3
    .venv/bin/python bench/bench_hour_cost.py --baseline-ref HEAD~3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from _process import free_port

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "hour_cost.json"
# The last commit before the per-hour cuts (fewer round trips, no fsync per derived file,
# small hours built in memory, range loads, no pandas import).
DEFAULT_BASELINE = "b4459ce8783e1f1fdb77b4f1e467d8d49af49138"
DEMO_DAYS = 21
DEMO_VEHICLES = 36

# Runs in a fresh process with PYTHONPATH pointing at one side's code.
_WORKER = r"""
import json, os, sys, time
t0 = time.perf_counter()
from atlasmesh.lake import Lake
from atlasmesh.telemetry import pipeline
from atlasmesh.warehouse import telemetry as hot
import clickhouse_connect
imported = time.perf_counter() - t0

mode, root, url, database, vehicles_file, service_pid = sys.argv[1:7]
lake = Lake(root)

def service_cpu():
    with open(f"/proc/{service_pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

out = {"imported_s": imported, "hours": []}
w0, c0, s0 = time.perf_counter(), time.process_time(), service_cpu()
if mode == "stage":
    known = [v.strip() for v in open(vehicles_file)]
    for hour in pipeline.list_arrival_hours(lake).arrival_hours:
        r = pipeline.stage_arrival_hour(lake, hour, known_vehicles=known)
        out["hours"].append([hour.isoformat(), r.received, r.staged, r.dead_lettered])
else:
    host, port = url.rsplit(":", 1)
    client = clickhouse_connect.get_client(host=host, port=int(port), interface="http")
    requests = 0
    backend = client._backend
    send = backend.request
    def counted(*a, **k):
        global requests
        requests += 1
        return send(*a, **k)
    backend.request = counted
    hours = sorted({h for a in pipeline.list_arrival_hours(lake).arrival_hours
                    for h in pipeline.affected_event_hours(lake, a)})
    hot.ensure_schema(client, database)
    start_requests = requests
    built = {}
    if mode == "publish":
        for hour in hours:
            b = pipeline.build_event_hour(lake, hour)
            built[hour] = b
            r = hot.load_hour_from_lake(client, lake, hour, database=database,
                                        missing_ok=not b.processed_bytes)
            out["hours"].append([hour.isoformat(), b.accepted, b.checksum, r.rows, r.checksum,
                                 r.metrics_rows])
    else:
        by_day = {}
        for hour in hours:
            built[hour] = pipeline.build_event_hour(lake, hour)
            by_day.setdefault(hour.date(), []).append(hour)
        for day_hours in by_day.values():
            empty = {h for h in day_hours if not built[h].processed_bytes}
            for r in hot.load_hours_from_lake(client, lake, day_hours, database=database,
                                              missing_ok=empty):
                b = built[r.hour]
                out["hours"].append([r.hour.isoformat(), b.accepted, b.checksum, r.rows,
                                     r.checksum, r.metrics_rows])
    out["requests"] = requests - start_requests
out["wall_s"] = time.perf_counter() - w0
out["cpu_s"] = time.process_time() - c0
out["service_cpu_s"] = service_cpu() - s0
out["pandas_imported"] = hasattr(sys.modules.get("pandas"), "DataFrame")
print(json.dumps(out))
"""


def _atlasmesh(home: Path, port: int, *args: str) -> str:
    env = {**os.environ, "ATLASMESH_HOME": str(home), "ATLASMESH_WAREHOUSE_PORT": str(port)}
    env.pop("ATLASMESH_CLICKHOUSE_URL", None)
    done = subprocess.run(
        [str(REPO / ".venv" / "bin" / "atlasmesh"), *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def _baseline_tree(ref: str, into: Path) -> Path:
    """The `atlasmesh` package of a git revision, extracted without touching the work tree."""
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", ref, "atlasmesh"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def _linked_copy(landing: Path, lake: Path) -> None:
    """A fresh lake holding the landing files (hard links: the files are immutable)."""
    shutil.copytree(landing, lake / "landing", copy_function=os.link)


def _run(code: Path, *args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code)}
    before = os.getloadavg()
    done = subprocess.run(
        [sys.executable, "-c", _WORKER, *args],
        env=env,
        capture_output=True,
        text=True,
        cwd=code,
    )
    if done.returncode:
        raise SystemExit(f"worker {args[0]} failed:\n{done.stderr[-3000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out["load_avg_before"], out["load_avg_after"] = before, os.getloadavg()
    return out


def _per_hour(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] / len(r["hours"]) for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=float, default=2.0)
    parser.add_argument("--vehicles", type=int, default=DEMO_VEHICLES)
    parser.add_argument("--interval-s", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--baseline-ref", default=DEFAULT_BASELINE)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="atlasmesh-bench-hour-cost-"))
    home, port = work / "home", free_port()
    sides = {"baseline": _baseline_tree(args.baseline_ref, work / "baseline"), "current": REPO}
    started = False
    try:
        print(f"simulating {args.vehicles} vehicles x {args.days} days into {home}", flush=True)
        _atlasmesh(
            home, port, "simulate", "--seed", str(args.seed), "--vehicles", str(args.vehicles),
            "--days", str(args.days), "--interval-s", str(args.interval_s),
        )  # fmt: skip
        with sqlite3.connect(home / "fleet_core.db") as db:
            ids = [r[0] for r in db.execute("SELECT vehicle_id FROM vehicles")]
        vehicles = work / "vehicles.txt"
        vehicles.write_text("\n".join(ids))
        _atlasmesh(home, port, "warehouse", "serve")
        started = True
        url = f"127.0.0.1:{port}"
        service_pid = json.loads((home / "warehouse.pid").read_text())["pid"]
        landing = home / "lake" / "landing"

        runs: dict[str, dict[str, list[dict]]] = {}
        plan = [("baseline", "publish"), ("current", "publish"), ("current", "publish-range")]
        for r in range(args.rounds):
            order = plan if r % 2 == 0 else plan[::-1]
            for side, publish in order:
                name = side if publish == "publish" else "current-range"
                lake = work / f"lake-{name}-{r}"
                _linked_copy(landing, lake)
                root = f"file://{lake}"
                db = f"bench_hour_cost_{name.replace('-', '_')}_{r}"
                common = (root, url, db, str(vehicles), str(service_pid))
                stage = _run(sides[side], "stage", *common)
                pub = _run(sides[side], publish, *common)
                runs.setdefault(name, {"stage": [], "publish": []})
                runs[name]["stage"].append(stage)
                runs[name]["publish"].append(pub)
                print(
                    f"round {r} {name:>13}: stage {stage['wall_s']:.1f}s "
                    f"({len(stage['hours'])} h), publish {pub['wall_s']:.1f}s "
                    f"({len(pub['hours'])} h, {pub['requests']} requests), "
                    f"load {pub['load_avg_after'][0]:.1f}",
                    flush=True,
                )
                shutil.rmtree(lake)
    finally:
        if started:
            _atlasmesh(home, port, "warehouse", "stop")
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    # Same input, same code paths: every side must stage and publish the same rows.
    reference = runs["baseline"]
    for name, side in runs.items():
        for step in ("stage", "publish"):
            for run in side[step]:
                got = sorted(h[:3] if step == "publish" else h for h in run["hours"])
                want = sorted(
                    h[:3] if step == "publish" else h for h in reference[step][0]["hours"]
                )
                assert got == want, f"{name} {step} differs from the baseline"
        for run in side["publish"]:
            assert all(h[1] == h[3] for h in run["hours"]), f"{name}: loaded != accepted"

    summary: dict[str, dict[str, float]] = {}
    for name, side in runs.items():
        stage, pub = side["stage"], side["publish"]
        summary[name] = {
            "stage_wall_s_per_hour": _per_hour(stage, "wall_s"),
            "stage_cpu_s_per_hour": _per_hour(stage, "cpu_s"),
            "publish_wall_s_per_hour": _per_hour(pub, "wall_s"),
            "publish_cpu_s_per_hour": _per_hour(pub, "cpu_s"),
            "publish_service_cpu_s_per_hour": _per_hour(pub, "service_cpu_s"),
            "publish_requests_per_hour": _per_hour(pub, "requests"),
            "stage_process_import_s": statistics.median(r["imported_s"] for r in stage),
            "publish_process_import_s": statistics.median(r["imported_s"] for r in pub),
            "pandas_imported": any(r["pandas_imported"] for r in stage + pub),
        }
    base = summary["baseline"]
    hours_21 = DEMO_DAYS * 24 + 1
    lines = []
    for name, s in summary.items():
        per_hour = s["stage_wall_s_per_hour"] + s["publish_wall_s_per_hour"]
        s["projected_21_days_ingest_s"] = round(hours_21 * per_hour, 1)
        ratios = {k: round(s[k] / base[k], 3) for k in s if k.endswith("per_hour") and base.get(k)}
        s.update({f"ratio_{k}": v for k, v in ratios.items()})
        lines.append(
            f"{name:>13}: stage {s['stage_wall_s_per_hour'] * 1000:6.0f} ms/h wall "
            f"{s['stage_cpu_s_per_hour'] * 1000:5.0f} ms CPU | publish "
            f"{s['publish_wall_s_per_hour'] * 1000:6.0f} ms/h wall "
            f"{s['publish_cpu_s_per_hour'] * 1000:5.0f} ms CPU + service "
            f"{s['publish_service_cpu_s_per_hour'] * 1000:5.0f} ms, "
            f"{s['publish_requests_per_hour']:.1f} requests | 21 days x {args.vehicles}: "
            f"{s['projected_21_days_ingest_s']:.0f} s | pandas {s['pandas_imported']}"
        )
    loads = [
        r[k]
        for side in runs.values()
        for step in side.values()
        for r in step
        for k in ("load_avg_before", "load_avg_after")
    ]
    result = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "baseline_ref": args.baseline_ref,
        "days": args.days,
        "vehicles": args.vehicles,
        "interval_s": args.interval_s,
        "rounds": args.rounds,
        "arrival_hours": len(reference["stage"][0]["hours"]),
        "event_hours": len(reference["publish"][0]["hours"]),
        "load_average_1min_range": [min(x[0] for x in loads), max(x[0] for x in loads)],
        "cpu_count": os.cpu_count(),
        "summary": summary,
    }
    print("\n".join(lines))
    print(f"load average (1 min) {result['load_average_1min_range']}")
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results: {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
