"""Probe: `dbt build --full-refresh` over a large hot path, its time and the service's memory.

Data as in `bench/bench_marts.py` (processed Parquet generated directly, fleet-core from the
simulator's world, the hot path bulk-loaded a day at a time); then one full-refresh build of
every model and data test, then one daily incremental build as Dagster runs it (window vars
of one day), each on a freshly restarted embedded warehouse service whose peak RSS (VmHWM)
and resident memory over time are taken, with dbt's per-model seconds and the nodes running
at the peak. Results are appended to bench/results/full_refresh.jsonl.

Run: `.venv/bin/python bench/probe_full_refresh.py --rows 100_000_000 --vehicles 1000
--interval-s 5`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from _process import peak_rss_mb, resident_mb  # noqa: E402
from bench_marts import (  # noqa: E402
    DAILY_BUILD,
    bulk_load_day,
    fleet_core_rows,
    node_seconds,
    plan_dataset,
    write_fleet_core,
    write_processed,
)

RESULTS = REPO / "bench" / "results" / "full_refresh.jsonl"


def run(args: argparse.Namespace) -> dict:
    """Generate, bulk-load, then time a full refresh and a daily build, watching the service."""
    from atlasmesh.analytics import run_dbt
    from atlasmesh.fleet_core.extract import extract_all
    from atlasmesh.lake import Lake
    from atlasmesh.warehouse import service
    from atlasmesh.warehouse.telemetry import ensure_schema
    from quality.score import ensure_schema as ensure_score_schema
    from tests.fixtures.warehouse import start_service

    days, origin, end, world, plan = plan_dataset(args, min_days=2)
    work = Path(tempfile.mkdtemp(prefix="probe-full-refresh-", dir=args.tmp))
    t0 = time.perf_counter()
    rows = write_processed(work / "lake", world, plan, origin, days, args.interval_s)
    print(f"generated {rows:,} rows in {time.perf_counter() - t0:.0f} s", flush=True)
    url = f"sqlite:///{work / 'fleet_core.db'}"
    write_fleet_core(world, fleet_core_rows(world, plan, origin, end, args.seed), url)

    svc = start_service(work / "home", warehouse_query_timeout_s=args.query_timeout_s)
    client = svc.client()
    try:
        ensure_schema(client)
        ensure_score_schema(client)
        extract_all(url, Lake(f"file://{work / 'lake'}"), client, now=end, full=True)
        for day in range(days):
            bulk_load_day(client, work / "lake", origin + timedelta(days=day))
        print(f"loaded (service peak {peak_rss_mb(service_pid(svc)):.0f} MB)", flush=True)
    finally:
        client.close()

    def build(name: str, dbt_args: list[str], dbt_vars: dict[str, str]) -> dict:
        """One dbt invocation on a freshly restarted service, its memory sampled."""
        # The load's peak and the memory the allocator keeps from earlier work are not this
        # build's: a restarted service gives its own figure.
        service.stop(svc.settings, timeout=60)
        service.serve(svc.settings)
        pid = service_pid(svc)
        rss_start = resident_mb(pid)
        target = work / "target" / name
        samples: list[tuple[float, float]] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.25):
                samples.append((time.time(), resident_mb(pid)))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t = time.perf_counter()
        result = run_dbt(
            svc.settings, dbt_args, dbt_vars=dbt_vars, target_path=target, capture=True
        )
        seconds = time.perf_counter() - t
        stop.set()
        sampler.join()
        record = {
            "returncode": result.returncode,
            "seconds": round(seconds, 1),
            "service_rss_mb_at_start": round(rss_start),
            "service_peak_rss_mb": round(peak_rss_mb(pid)),
            "load_avg_1m": round(os.getloadavg()[0], 2),
            "slowest_nodes_s": dict(
                sorted(node_seconds(target / "run_results.json").items(), key=lambda kv: -kv[1])[:8]
            ),
            "nodes_running_at_peak": running_at_peak(target / "run_results.json", samples),
        }
        if result.returncode != 0:
            record["tail"] = result.stdout[-4000:]
        print(f"{name}: {record['seconds']} s, peak {record['service_peak_rss_mb']} MB", flush=True)
        return record

    out = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "rows": rows,
        "vehicles": args.vehicles,
        "interval_s": args.interval_s,
        "days": days,
    }
    try:
        if args.full_refresh:
            out["full_refresh"] = build(
                "full-refresh",
                ["build", "--full-refresh", "--exclude-resource-type", "unit_test"],
                {"as_of": end.isoformat()},
            )
        else:
            # Every model must exist before the daily build: build them on the first day.
            out["first_day"] = build(
                "first-day",
                ["build", "--exclude-resource-type", "unit_test"],
                {
                    "as_of": (origin + timedelta(days=1)).isoformat(),
                    "window_start": origin.isoformat(),
                    "window_end": (origin + timedelta(days=1)).isoformat(),
                },
            )
        # A daily run as Dagster starts it: the incremental models and what reads them, with
        # the window vars of one day (the last but one, so the next day's points exist).
        day = origin + timedelta(days=days - 2)
        out["one_day"] = build(
            "one-day",
            DAILY_BUILD,
            {
                "as_of": (day + timedelta(days=1)).isoformat(),
                "window_start": day.isoformat(),
                "window_end": (day + timedelta(days=1)).isoformat(),
            },
        )
    finally:
        service.stop(svc.settings, timeout=60)
    return out


def service_pid(svc: Any) -> int:
    """The process id of a running embedded warehouse service."""
    from atlasmesh.warehouse import service

    return json.loads(service.ServicePaths.of(svc.settings).pidfile.read_text())["pid"]


def running_at_peak(run_results: Path, samples: list[tuple[float, float]]) -> dict:
    """The service's highest resident sample and the dbt nodes running at that moment."""
    if not samples or not run_results.exists():
        return {}
    at, mb = max(samples, key=lambda s: s[1])
    running = []
    for r in json.loads(run_results.read_text())["results"]:
        for step in r.get("timing", []):
            if step["name"] != "execute" or not step.get("started_at"):
                continue
            start = datetime.fromisoformat(step["started_at"].replace("Z", "+00:00"))
            end = datetime.fromisoformat(step["completed_at"].replace("Z", "+00:00"))
            if start.timestamp() <= at <= end.timestamp():
                running.append(r["unique_id"].split(".")[-1])
    return {"resident_mb": round(mb), "nodes": running}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000_000)
    parser.add_argument("--vehicles", type=int, default=1000)
    parser.add_argument("--interval-s", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--tmp", default=None, help="where the lake and warehouse go")
    parser.add_argument("--query-timeout-s", type=float, default=3600.0)
    parser.add_argument(
        "--full-refresh",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure the full refresh (without it, the hot path is built by one full build "
        "of the first day, then only the daily build is measured)",
    )
    parser.add_argument("--note", default="", help="what this run measures, kept with its result")
    args = parser.parse_args()
    out = {"note": args.note, **run(args)}
    print(json.dumps(out, indent=2))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as f:
        f.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
