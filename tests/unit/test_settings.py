"""Settings: local defaults that run on a laptop, environment overrides, secrets kept secret."""

from __future__ import annotations

import re
from pathlib import Path

from atlasmesh.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_defaults_are_local_and_under_home(tmp_path, monkeypatch):
    monkeypatch.setenv("ATLASMESH_HOME", str(tmp_path))
    s = Settings()
    assert s.embedded_warehouse
    assert s.warehouse_url == "http://127.0.0.1:18123"
    assert s.lake_root == f"file://{tmp_path / 'lake'}"
    assert s.fleet_core_url == f"sqlite:///{tmp_path / 'fleet_core.db'}"
    assert s.warehouse_dir == tmp_path / "warehouse"
    assert s.dagster_home == tmp_path / "dagster"


def test_scale_out_is_environment_only(monkeypatch):
    monkeypatch.setenv("ATLASMESH_CLICKHOUSE_URL", "http://clickhouse.internal:8123")
    monkeypatch.setenv("ATLASMESH_LAKE_URL", "s3://fleet-lake/prod")
    monkeypatch.setenv("ATLASMESH_FLEET_CORE_DSN", "postgresql+psycopg://u@db/fleet")
    s = Settings()
    assert not s.embedded_warehouse
    assert s.warehouse_url == "http://clickhouse.internal:8123"
    assert s.lake_root == "s3://fleet-lake/prod"
    assert s.fleet_core_url == "postgresql+psycopg://u@db/fleet"


def test_secrets_never_print(monkeypatch):
    monkeypatch.setenv("ATLASMESH_S3_SECRET_ACCESS_KEY", "very-secret-key")
    monkeypatch.setenv("ATLASMESH_CLICKHOUSE_PASSWORD", "hunter22")
    s = Settings()
    assert s.s3_secret_access_key.get_secret_value() == "very-secret-key"
    shown = repr(s) + str(s.model_dump())
    assert "very-secret-key" not in shown
    assert "hunter22" not in shown


def test_readme_documents_every_setting():
    table = README.read_text()
    missing = [
        name
        for name in Settings.model_fields
        if not re.search(rf"`ATLASMESH_{name.upper()}`", table)
    ]
    assert not missing, f"README settings table lacks: {missing}"


def test_a_bad_setting_stops_the_cli_with_one_line_per_variable(tmp_path):
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        "ATLASMESH_HOME": str(tmp_path),
        "ATLASMESH_WAREHOUSE_PORT": "99999",
        "ATLASMESH_WAREHOUSE_QUERY_TIMEOUT_S": "soon",
        "ATLASMESH_CLICKHOUSE_PASSWORD": "hunter2-secret",
    }
    result = subprocess.run(
        [sys.executable, "-c", "from atlasmesh.cli import main; main()", "warehouse", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: ATLASMESH_WAREHOUSE_PORT: ")
    assert lines[1].startswith("error: ATLASMESH_WAREHOUSE_QUERY_TIMEOUT_S: ")
    assert "Traceback" not in result.stderr and "hunter2" not in result.stderr + result.stdout


def test_a_home_that_is_a_file_is_one_clear_error(tmp_path, monkeypatch):
    import pytest
    from pydantic import ValidationError

    afile = tmp_path / "not-a-folder"
    afile.write_text("")
    for home in (afile, afile / "below"):
        monkeypatch.setenv("ATLASMESH_HOME", str(home))
        with pytest.raises(ValidationError, match="is a file, not a folder"):
            Settings()
    monkeypatch.setenv("ATLASMESH_HOME", str(tmp_path / "new" / "deep"))
    assert Settings().home_dir == tmp_path / "new" / "deep"


def test_an_empty_home_is_the_default_not_the_working_directory(monkeypatch):
    monkeypatch.setenv("ATLASMESH_HOME", "")
    assert Settings().home == Path(".atlasmesh")
