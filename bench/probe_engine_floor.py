"""Probe: the floor of the staged design if the engine did every step itself, against the baseline.

Not the pipeline. In one chDB session, on the bench landing of `bench/bench_ingest.py`:
- baseline: the bench's bulk load (JSON lines straight into a MergeTree table);
- stage floor: the same parse written to one staged Parquet file (zstd), no rule checks;
- build floor: that file deduplicated by telemetry_id (`LIMIT 1 BY`) into a processed file;
- load floor: the processed file into a MergeTree table like the baseline's.
Rule checks, dead letters, manifests and Python are all left out, so the sum of the three
steps is what no implementation of the landing -> staged -> processed -> warehouse design
can beat; its ratio to the baseline bounds the bench's `ratio_vs_baseline`.

    .venv/bin/python bench/probe_engine_floor.py /tmp/atlasmesh-bench-ingest/1m [more roots] \
        >> bench/results/engine_floor.jsonl
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from bench_ingest import BASELINE_SETTINGS, STRUCTURE
from chdb.session import Session

TABLE = "ENGINE = MergeTree ORDER BY (vehicle_id, recorded_at)"
PARQUET = "output_format_parquet_compression_method = 'zstd'"


def _timed(session: Session, sql: str) -> float:
    started = time.perf_counter()
    session.query(sql)
    return time.perf_counter() - started


def run(root: Path, scratch: Path) -> dict:
    """Each step timed once in one session; row counts to show nothing was skipped silently."""
    glob = f"{root}/lake/landing/telemetry/schema=*/date=*/hour=*/*.jsonl.gz"
    staged, processed = scratch / "staged.parquet", scratch / "processed.parquet"
    quoted = STRUCTURE.replace("'", "\\'")
    session = Session(str(scratch / "chdb"))
    try:
        session.query("CREATE DATABASE b")
        session.query(f"CREATE TABLE b.baseline ({STRUCTURE}) {TABLE}")
        session.query(f"CREATE TABLE b.loaded ({STRUCTURE}) {TABLE}")
        source = f"file('{glob}', 'JSONEachRow', '{quoted}')"
        seconds = {
            "baseline": _timed(
                session,
                f"INSERT INTO b.baseline SELECT * FROM {source} SETTINGS {BASELINE_SETTINGS}",
            ),
            "stage_floor": _timed(
                session,
                f"INSERT INTO FUNCTION file('{staged}', Parquet) SELECT * FROM {source} "
                f"SETTINGS {BASELINE_SETTINGS}, {PARQUET}",
            ),
            "build_floor": _timed(
                session,
                f"INSERT INTO FUNCTION file('{processed}', Parquet) SELECT * FROM "
                f"file('{staged}', Parquet) LIMIT 1 BY telemetry_id SETTINGS {PARQUET}",
            ),
            "load_floor": _timed(
                session, f"INSERT INTO b.loaded SELECT * FROM file('{processed}', Parquet)"
            ),
        }
        rows = {
            t: int(session.query(f"SELECT count() FROM b.{t}", "CSV").bytes().strip())
            for t in ("baseline", "loaded")
        }
    finally:
        session.close()
    floor = seconds["stage_floor"] + seconds["build_floor"] + seconds["load_floor"]
    return {
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "rows": rows,
        "floor_seconds": round(floor, 2),
        "floor_ratio_vs_baseline": round(seconds["baseline"] / floor, 3),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    """Run the probe twice per bench root and print each result as a JSON line."""
    roots = sys.argv[1:] or ["/tmp/atlasmesh-bench-ingest/1m"]
    for root in map(Path, roots):
        for _ in range(2):
            with tempfile.TemporaryDirectory(dir=root) as scratch:
                result = {"root": str(root), **run(root, Path(scratch))}
                print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
