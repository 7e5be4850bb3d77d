"""Benchmark of incremental fleet-core extraction (source -> lake Parquet + ClickHouse over HTTP).

Measures, in one run and per source backend (SQLite, PostgreSQL): a baseline plain streamed
SELECT of the allow-listed columns of `alerts`, the initial extraction of the same rows, a
re-run with nothing changed, and a re-run after 1% of the rows changed; each phase runs in a
fresh process so its peak RSS is its own. Prints a table; writes
bench/results/fleet_core_extract.json.

    .venv/bin/python bench/bench_fleet_core_extract.py [--rows 200000] [--backends sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _process import free_port

RESULTS = Path(__file__).parent / "results" / "fleet_core_extract.json"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _phase(kind: str, url: str, lake_root: str, settings_json: str, database: str) -> dict:
    """One measured phase in this (fresh) process."""
    import pyarrow  # noqa: F401  (imported by both paths; keep import cost out of the timing)

    from atlasmesh.fleet_core import extract
    from atlasmesh.fleet_core.db import make_engine
    from atlasmesh.lake import Lake
    from atlasmesh.settings import Settings
    from atlasmesh.warehouse.client import connect

    idle = _rss_mb()
    engine = make_engine(url)
    started = time.perf_counter()
    if kind == "baseline":
        info = extract.spec("alerts")
        rows = 0
        with engine.connect() as connection:
            for chunk in extract._read_chunks(connection, info, None, datetime.now(UTC), 50_000):
                rows += len(chunk)
        out = {"rows": rows}
    else:
        client = connect(Settings.model_validate_json(settings_json))
        result = extract.extract_table(
            engine, "alerts", Lake(lake_root), client, now=datetime.now(UTC), database=database
        )
        out = {
            "rows_read": result.rows_read,
            "rows": result.rows_written,
            "bytes": result.bytes_written,
            "files": len(result.files),
        }
    out["seconds"] = time.perf_counter() - started
    out["peak_rss_mb"] = _rss_mb()
    out["idle_rss_mb"] = idle
    engine.dispose()
    return out


def _run_phase(*args: str) -> dict:
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(_phase, args)


def _seed(url: str, rows: int) -> list[str]:
    from atlasmesh.fleet_core.store import FleetCoreStore

    with FleetCoreStore(url) as store:
        org, fleet = str(uuid.uuid4()), str(uuid.uuid4())
        store.upsert("organizations", [{"organization_id": org, "name": "o", "sector": "s"}])
        store.upsert(
            "fleets", [{"fleet_id": fleet, "organization_id": org, "name": "f", "sector": "s"}]
        )
        vehicles = [str(uuid.uuid4()) for _ in range(1000)]
        store.upsert(
            "vehicles",
            [
                {"vehicle_id": v, "fleet_id": fleet, "asset_tag": f"a{i}", "manufacturer": "m",
                 "model": "x", "serial_number": f"s{i}", "vehicle_profile": {"powertrain": "ev"}}
                for i, v in enumerate(vehicles)
            ],
        )  # fmt: skip
        now = datetime.now(UTC)
        ids = [str(uuid.uuid4()) for _ in range(rows)]
        for start in range(0, rows, 50_000):
            store.upsert(
                "alerts",
                [
                    {"alert_id": a, "vehicle_id": vehicles[i % 1000], "alert_type": "battery_low",
                     "severity": "high", "triggered_at": now, "message": f"battery at {i % 100}%",
                     "context_data": {"level": i % 100, "threshold": 10, "trip": None}}
                    for i, a in enumerate(ids[start : start + 50_000], start)
                ],
            )  # fmt: skip
        return ids


def _touch(url: str, ids: list[str]) -> None:
    from atlasmesh.fleet_core.store import FleetCoreStore

    with FleetCoreStore(url) as store:
        store.upsert("alerts", [{"alert_id": a, "status": "acknowledged"} for a in ids])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()

    import psycopg

    from atlasmesh.settings import Settings
    from atlasmesh.warehouse import service

    home = Path(tempfile.mkdtemp(prefix="bench-extract-"))
    settings = Settings(home=home, warehouse_port=free_port(), clickhouse_url="")
    service.serve(settings)
    results: dict[str, dict] = {}
    try:
        for backend in args.backends.split(","):
            if backend == "sqlite":
                url = f"sqlite:///{home / 'fleet_core.db'}"
            else:
                name = f"bench_extract_{uuid.uuid4().hex[:8]}"
                with psycopg.connect("host=127.0.0.1 user=postgres", autocommit=True) as admin:
                    admin.execute(f'CREATE DATABASE "{name}"')
                url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
            t = time.perf_counter()
            ids = _seed(url, args.rows)
            seed_s = time.perf_counter() - t
            lake = f"file://{home / ('lake-' + backend)}"
            database = f"fleet_core_{backend}"
            common = (url, lake, settings.model_dump_json(), database)
            phases = {"baseline": _run_phase("baseline", *common)}
            phases["initial"] = _run_phase("extract", *common)
            phases["rerun_unchanged"] = _run_phase("extract", *common)
            _touch(url, ids[::100])
            phases["rerun_1pct_changed"] = _run_phase("extract", *common)
            results[backend] = {"rows": args.rows, "seed_s": seed_s, "phases": phases}
            if backend != "sqlite":
                with psycopg.connect("host=127.0.0.1 user=postgres", autocommit=True) as admin:
                    admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        service.stop(settings, timeout=30)

    print(f"{'backend':<11}{'phase':<20}{'rows':>9}{'s':>8}{'rows/s':>10}{'x base':>8}"
          f"{'MB lake':>9}{'peak RSS MB':>13}")  # fmt: skip
    for backend, r in results.items():
        base = r["phases"]["baseline"]["seconds"]
        for phase, p in r["phases"].items():
            p["ratio_to_baseline"] = p["seconds"] / base
            rows = p.get("rows_read", p["rows"])
            print(
                f"{backend:<11}{phase:<20}{p['rows']:>9}{p['seconds']:>8.2f}"
                f"{rows / p['seconds']:>10.0f}{p['ratio_to_baseline']:>8.2f}"
                f"{p.get('bytes', 0) / 1e6:>9.2f}{p['peak_rss_mb']:>13.0f}"
            )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
