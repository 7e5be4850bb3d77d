"""Probe: how fast chDB parses raw telemetry lines and evaluates rule checks itself (next design's floor).

Not the pipeline: it counts, per rule, the lines the engine would refuse, reading the
landing files as raw lines (`LineAsString`) and parsing each line once with `JSONExtract`
into a typed tuple. Compare with `bench/bench_ingest.py`'s stage step on the same files.

    .venv/bin/python bench/probe_engine_validation.py /tmp/atlasmesh-bench-ingest/1m/lake
"""

from __future__ import annotations

import sys
import tempfile
import time

from chdb.session import Session

TUPLE = (
    "Tuple(telemetry_id Nullable(String), vehicle_id Nullable(String), "
    "recorded_at Nullable(String), schema_version Nullable(String), "
    "location Tuple(lat Nullable(Float64), lon Nullable(Float64)), speed_kmh Nullable(Float64), "
    "heading_deg Nullable(Float64), heading_degrees Nullable(Float64), "
    "battery_level_percent Nullable(Float64), fuel_level_percent Nullable(Float64), "
    "odometer_km Nullable(Float64), diagnostic_codes Array(String), "
    "operational_status Nullable(String))"
)
RULES = """
  countIf(NOT isValidJSON(line)) AS malformed,
  countIf(j.telemetry_id IS NULL OR j.vehicle_id IS NULL OR j.recorded_at IS NULL) AS missing,
  countIf(toUUIDOrNull(j.telemetry_id) IS NULL) AS bad_uuid,
  countIf(parseDateTime64BestEffortOrNull(j.recorded_at, 3, 'UTC') IS NULL) AS bad_time,
  countIf(NOT (j.location.lat BETWEEN -90 AND 90 AND j.location.lon BETWEEN -180 AND 180))
    AS bad_location,
  countIf(NOT (j.speed_kmh BETWEEN 0 AND 400)) AS bad_speed,
  countIf(isNaN(j.speed_kmh) OR isInfinite(j.speed_kmh)) AS non_finite,
  countIf(length(line) > 65536) AS oversized,
  countIf(NOT isValidUTF8(line)) AS bad_utf8
"""


def main() -> None:
    """Time reading the lines alone, then parsing them with the rule checks, twice."""
    lake = sys.argv[1] if len(sys.argv) > 1 else "/tmp/atlasmesh-bench-ingest/1m/lake"
    glob = f"{lake}/landing/telemetry/schema=*/date=*/hour=*/*.jsonl.gz"
    with tempfile.TemporaryDirectory() as path:
        session = Session(path)
        started = time.perf_counter()
        lines = session.query(f"SELECT count() FROM file('{glob}', 'LineAsString')", "CSV")
        print(f"read {lines.bytes().decode().strip()} lines: {time.perf_counter() - started:.2f} s")
        sql = (
            f"WITH JSONExtract(line, '{TUPLE}') AS j SELECT count() AS lines, {RULES} "
            f"FROM file('{glob}', 'LineAsString') FORMAT Vertical"
        )
        for _ in range(2):
            started = time.perf_counter()
            result = session.query(sql, "Vertical").bytes().decode()
            print(f"parse + rules: {time.perf_counter() - started:.2f} s")
        print(result)


if __name__ == "__main__":
    main()
