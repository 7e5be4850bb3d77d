"""Backfills from the command line, as docs/orchestration.md shows them: simulate, extract, stage, publish."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from atlasmesh.warehouse import service
from tests.fixtures.warehouse import start_service

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

BIN = Path(sys.executable).parent
# Recent enough for the 90-day hot retention, old enough to be complete.
DAY = (datetime.now(UTC) - timedelta(days=3)).date()
STAGED = [f"{DAY}-{h:02d}:00" for h in (5, 6, 7)]
PUBLISHED = [f"{DAY}-{h:02d}:00" for h in (5, 6)]


def _run(env: dict[str, str], *args: str) -> None:
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, (
        f"{' '.join(args)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-4000:]}"
    )


def test_a_range_is_staged_and_published_with_the_dagster_cli(tmp_path):
    home = tmp_path / "home"
    svc = start_service(home)
    try:
        # Only this home's settings: nothing from the caller's environment may redirect it.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ATLASMESH_")}
        env |= {
            "ATLASMESH_HOME": str(home),
            "ATLASMESH_WAREHOUSE_PORT": str(svc.port),
            "DAGSTER_HOME": str(tmp_path / "dagster"),
        }
        (tmp_path / "dagster").mkdir()
        materialize = (
            str(BIN / "dagster"),
            "asset",
            "materialize",
            "-m",
            "orchestration.definitions",
        )
        _run(
            env,
            str(BIN / "atlasmesh"),
            "simulate",
            "--seed",
            "5",
            "--vehicles",
            "3",
            "--days",
            "1",
            "--start",
            str(DAY),
        )
        _run(env, *materialize, "--select", "key:fleet_core/*")
        _run(
            env,
            *materialize,
            "--select",
            "staging/vehicle_telemetry",
            "--partition-range",
            "...".join(STAGED[::2]),
        )
        _run(
            env,
            *materialize,
            "--select",
            "processed/vehicle_telemetry,atlasmesh_analytics/vehicle_telemetry,atlasmesh_analytics/vehicle_metrics_hourly",
            "--partition-range",
            "...".join(PUBLISHED),
        )

        with dg.DagsterInstance.from_config(str(tmp_path / "dagster")) as instance:
            for key, wanted in (
                ("staging/vehicle_telemetry", STAGED),
                ("processed/vehicle_telemetry", PUBLISHED),
            ):
                done = instance.get_materialized_partitions(dg.AssetKey.from_user_string(key))
                assert set(wanted) <= done, key
        # The warehouse holds exactly the processed rows of each published hour.
        client = svc.client()
        for key in PUBLISHED:
            hour = datetime.strptime(key, "%Y-%m-%d-%H:%M")
            files = list(
                (
                    home
                    / "lake"
                    / "processed"
                    / "vehicle_telemetry"
                    / f"date={hour:%Y-%m-%d}"
                    / f"hour={hour:%H}"
                ).glob("*.parquet")
            )
            processed = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
            loaded = client.command(
                "SELECT count() FROM atlasmesh_analytics.vehicle_telemetry "
                f"WHERE toStartOfHour(recorded_at) = toDateTime('{hour:%Y-%m-%d %H:%M:%S}', 'UTC')"
            )
            assert processed > 0 and int(loaded) == processed, key
    finally:
        service.stop(svc.settings, timeout=30)
