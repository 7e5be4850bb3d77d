"""dbt-clickhouse (`driver: http`) builds a small project against the warehouse service."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROJECT = Path(__file__).parents[1] / "fixtures" / "dbt_smoke"
DBT = Path(sys.executable).parent / "dbt"


def _dbt(project: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(DBT), *args, "--project-dir", str(project), "--profiles-dir", str(project)],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_dbt_build_and_an_incremental_second_run(warehouse_service, tmp_path):
    project = tmp_path / "dbt_smoke"
    shutil.copytree(PROJECT, project)
    schema = f"dbt_smoke_{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "DBT_SMOKE_HOST": "127.0.0.1",
        "DBT_SMOKE_PORT": str(warehouse_service.port),
        "DBT_SMOKE_SCHEMA": schema,
        "ATLASMESH_CLICKHOUSE_USER": warehouse_service.settings.clickhouse_user,
        "ATLASMESH_CLICKHOUSE_PASSWORD": warehouse_service.settings.clickhouse_password.get_secret_value(),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }
    first = _dbt(project, env, "build")
    assert first.returncode == 0, first.stdout[-4000:]
    assert "Completed successfully" in first.stdout

    client = warehouse_service.client(database=schema)
    assert client.command("SELECT count() FROM telemetry_incremental") == 4
    assert client.command("SELECT count() FROM vehicle_speeds") == 3

    # The second batch arrives: only the incremental model and its tests run again.
    second = _dbt(
        project, env, "build", "--select", "telemetry_incremental", "--vars", "{batch: 2}"
    )
    assert second.returncode == 0, second.stdout[-4000:]
    assert client.command("SELECT count() FROM telemetry_incremental") == 7
    assert client.command("SELECT uniqExact(event_id) FROM telemetry_incremental") == 7
    assert client.command("SELECT max(speed_kmh) FROM telemetry_incremental") == pytest.approx(90.0)
    client.command(f"DROP DATABASE {schema}")


def test_dbt_queries_spill_past_the_configured_memory(warehouse_service, tmp_path):
    # A full refresh or a large day must spill its sorts and aggregations rather than hold
    # the history in memory; the limit comes from ATLASMESH_DBT_SPILL_BYTES via the profile.
    from atlasmesh.analytics import run_dbt

    names = [
        "max_bytes_before_external_sort",
        "max_bytes_ratio_before_external_sort",
        "max_bytes_before_external_group_by",
        "max_bytes_ratio_before_external_group_by",
    ]
    sql = "select " + ", ".join(f"toString(getSetting('{n}')) as {n}" for n in names)
    for spill, expected in ((123_456_789, ["123456789", "0"] * 2), (0, ["0", "0.5"] * 2)):
        settings = warehouse_service.settings.model_copy(update={"dbt_spill_bytes": spill})
        result = run_dbt(
            settings,
            ["show", "--inline", sql, "--output", "json", "--log-format", "text"],
            target_path=tmp_path / str(spill),
            capture=True,
            timeout=240,
        )
        assert result.returncode == 0, result.stdout[-4000:]
        shown = json.loads(result.stdout[result.stdout.index("{") :].rsplit("}", 1)[0] + "}")
        assert [shown["show"][0][n] for n in names] == expected


def test_a_first_dbt_build_on_an_empty_warehouse_gives_empty_marts(tmp_path):
    # An analyst's `atlasmesh dbt -- build` before anything was loaded: the sources are
    # created empty and every model and test passes on no rows.
    from atlasmesh.analytics import PROJECT_DIR, dbt_passthrough, passthrough_target
    from atlasmesh.warehouse import service
    from tests.fixtures.warehouse import start_service

    svc = start_service(tmp_path / "home")
    started = time.time()
    try:
        assert dbt_passthrough(svc.settings, ["build", "--quiet"]) == 0
        # Its artifacts stay in the home: the project's target holds the manifest every
        # Dagster run loads, which a build must not rewrite under it.
        assert (passthrough_target(svc.settings) / "run_results.json").exists()
        project_results = PROJECT_DIR / "target" / "run_results.json"
        assert not project_results.exists() or project_results.stat().st_mtime < started
        client = svc.client()
        assert client.command("SELECT count() FROM analytics.fct_vehicle_days") == 0
        assert client.command("SELECT count() FROM fleet_core.vehicles") == 0
    finally:
        service.stop(svc.settings, timeout=30)
