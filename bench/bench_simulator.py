"""Generation speed of the fleet simulator (events per second) and the 1,000-vehicle-day projection.

Baseline, measured in the same run: a naive generator that builds each event as a Python
dict, serialises it with orjson and gzips the lines (no kinematics, no faults, no files).
Each size runs in its own process so its peak memory is its own. Usage:
    .venv/bin/python bench/bench_simulator.py [--quick] [RESULTS_JSON]
"""

from __future__ import annotations

import gzip
import json
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import orjson

ARGS = [a for a in sys.argv[1:] if not a.startswith("--")]
QUICK = "--quick" in sys.argv
RESULTS = Path(ARGS[0] if ARGS else "bench/results/simulator.json")
DAY_EVENTS = 1000 * 86_400  # 1,000 vehicles x 1 day x 1 Hz
# (label, vehicles, days, interval_s)
SIZES = [
    ("10 veh x 1 h x 1 Hz", 10, 1 / 24, 1.0),
    ("100 veh x 1 h x 1 Hz", 100, 1 / 24, 1.0),
    ("36 veh x 21 d x 30 s (demo)", 36, 21.0, 30.0),
    ("1000 veh x 1 h x 1 Hz", 1000, 1 / 24, 1.0),
]
if QUICK:
    SIZES = [SIZES[0], ("1000 veh x 6 min x 1 Hz", 1000, 0.1 / 24, 1.0)]

_CHILD = """
import json, resource, sys, time
from pathlib import Path
from atlasmesh.fleet_core.store import FleetCoreStore
from atlasmesh.lake import Lake
from atlasmesh.simulator import SimConfig, simulate
vehicles, days, interval, work = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), Path(sys.argv[4])
config = SimConfig(seed=1, vehicles=vehicles, days=days, interval_s=interval, start="2026-10-01T06:00:00Z")
started = time.perf_counter()
with FleetCoreStore(f"sqlite:///{work / 'fc.db'}") as store:
    s = simulate(config, lake=Lake(f"file://{work / 'lake'}"), store=store, truth_dir=work / "truth")
print(json.dumps({"events": s.events, "seconds": time.perf_counter() - started, "files": s.files,
                  "raw_bytes": s.raw_bytes, "gzip_bytes": s.gzip_bytes,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def naive_baseline(n: int = 100_000) -> float:
    """Events per second of the straightforward dict + orjson + gzip approach."""
    rng = np.random.default_rng(0)
    values = rng.normal(50, 10, (n, 20)).round(2).tolist()
    started = time.perf_counter()
    lines = []
    for i, v in enumerate(values):
        event = {
            "telemetry_id": str(uuid.UUID(int=i)),
            "vehicle_id": str(uuid.UUID(int=i % 1000)),
            "recorded_at": "2026-10-01T06:00:00.000Z",
            "schema_version": "1.0.0",
            "location": {"lat": v[0], "lon": v[1]},
            "speed_kmh": v[2],
            "heading_degrees": v[3],
            "battery_level_percent": v[4],
            "fuel_level_percent": None,
            "sensor_readings": {f"s{k}": v[5 + k] for k in range(11)},
            "diagnostic_codes": [],
            "environmental_conditions": {"ambient_temp_c": v[16], "humidity_percent": v[17]},
            "operational_status": "driving",
            "custom_data": {"gateway_id": "gw"},
        }
        lines.append(orjson.dumps(event))
    gzip.compress(b"\n".join(lines), 2, mtime=0)
    return n / (time.perf_counter() - started)


def run_size(vehicles: int, days: float, interval: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-sim-") as work:
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, str(vehicles), str(days), str(interval), work],
            check=True,
            capture_output=True,
            text=True,
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    baseline = naive_baseline()
    rows = []
    for label, vehicles, days, interval in SIZES:
        r = run_size(vehicles, days, interval)
        r["label"] = label
        r["events_per_s"] = r["events"] / r["seconds"]
        r["ratio_vs_baseline"] = r["events_per_s"] / baseline
        rows.append(r)
    big = rows[-1]
    projection = {
        "events": DAY_EVENTS,
        "hours": DAY_EVENTS / big["events_per_s"] / 3600,
        "gzip_gb": big["gzip_bytes"] / big["events"] * DAY_EVENTS / 1e9,
        "raw_gb": big["raw_bytes"] / big["events"] * DAY_EVENTS / 1e9,
        # Blocks are bounded in samples, so memory does not grow with days.
        "peak_rss_mb": big["peak_rss_mb"],
        "basis": big["label"],
    }
    print(f"baseline (dict + orjson + gzip, no simulation): {baseline:,.0f} events/s")
    print(
        f"{'size':32} {'events':>11} {'seconds':>8} {'events/s':>10} {'x base':>7} {'files':>7} {'peak MB':>8}"
    )
    for r in rows:
        print(
            f"{r['label']:32} {r['events']:>11,} {r['seconds']:>8.1f} {r['events_per_s']:>10,.0f} "
            f"{r['ratio_vs_baseline']:>7.2f} {r['files']:>7,} {r['peak_rss_mb']:>8.0f}"
        )
    print(
        f"projection 1,000 vehicles x 1 day x 1 Hz ({DAY_EVENTS:,} events): "
        f"{projection['hours']:.2f} h, {projection['gzip_gb']:.1f} GB gzip "
        f"({projection['raw_gb']:.0f} GB raw), peak memory ~{projection['peak_rss_mb']:.0f} MB"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "baseline_events_per_s": baseline,
                "sizes": rows,
                "projection_1000_vehicle_day": projection,
                "bench_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
