"""Scale-out settings (a ClickHouse server, S3, PostgreSQL): bad or unreachable ones are one clear line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from atlasmesh.settings import Settings
from tests.fixtures.services import free_port

SECRET = "hunter2-not-for-logs"


def _scale_out_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """This process's environment minus any ATLASMESH_ setting, pointed at `tmp_path`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATLASMESH_")}
    env |= {"ATLASMESH_HOME": str(tmp_path), "DAGSTER_HOME": str(tmp_path / "dagster")}
    env |= {"ATLASMESH_DEMO_DAYS": "1", "ATLASMESH_DEMO_VEHICLES": "1"}
    return env | extra


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, timeout=180, check=False
    )


@pytest.mark.parametrize(
    "url",
    [
        "127.0.0.1:18123",  # no scheme: clients silently went to localhost:8123
        "clickhouse.internal:8123",
        "ftp://clickhouse.internal:8123",
        f"http://analyst:{SECRET}@clickhouse.internal:8123",  # credentials were ignored
        "http://clickhouse.internal:99999",  # a ValueError traceback in every command
        "http://clickhouse.internal:8123/db?user=x",
        "http://:8123",
    ],
)
def test_a_clickhouse_url_clients_would_misread_is_refused_without_echoing_it(url, monkeypatch):
    monkeypatch.setenv("ATLASMESH_CLICKHOUSE_URL", url)
    with pytest.raises(ValidationError) as err:
        Settings()
    assert "clickhouse_url" in str(err.value)
    assert SECRET not in str(err.value.errors(include_input=False))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://clickhouse.internal:8443", "https://clickhouse.internal:8443"),
        ("http://127.0.0.1:8123/", "http://127.0.0.1:8123"),
        (" http://ch ", "http://ch"),
        ("", ""),
    ],
)
def test_a_plain_clickhouse_url_is_accepted(url, expected, monkeypatch):
    monkeypatch.setenv("ATLASMESH_CLICKHOUSE_URL", url)
    settings = Settings()
    assert settings.clickhouse_url == expected
    assert settings.embedded_warehouse == (expected == "")


def test_the_cli_names_a_bad_clickhouse_url_in_one_line(tmp_path):
    env = _scale_out_env(tmp_path, ATLASMESH_CLICKHOUSE_URL=f"http://u:{SECRET}@127.0.0.1:1")
    result = _run(["-c", "from atlasmesh.cli import main; main()", "alerts", "list"], env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ATLASMESH_CLICKHOUSE_URL: ")
    assert "Traceback" not in result.stderr and SECRET not in result.stderr + result.stdout


def test_an_unreachable_clickhouse_server_is_one_line_in_the_cli(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    env = _scale_out_env(
        tmp_path, ATLASMESH_CLICKHOUSE_URL=url, ATLASMESH_CLICKHOUSE_PASSWORD=SECRET
    )
    result = _run(["-c", "from atlasmesh.cli import main; main()", "alerts", "list"], env)
    assert result.returncode == 1, result.stderr
    assert f"error: cannot reach the warehouse at {url}" in result.stderr
    assert "ATLASMESH_CLICKHOUSE_URL" in result.stderr
    assert "Traceback" not in result.stderr and SECRET not in result.stderr + result.stdout


def test_an_unreachable_clickhouse_server_stops_the_demo_with_one_line(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    env = _scale_out_env(
        tmp_path, ATLASMESH_CLICKHOUSE_URL=url, ATLASMESH_CLICKHOUSE_PASSWORD=SECRET
    )
    result = _run(["-m", "orchestration.demo"], env)
    assert result.returncode == 1, result.stderr
    assert f"demo: error: cannot reach the warehouse at {url}" in result.stderr
    assert "Traceback" not in result.stderr and SECRET not in result.stderr + result.stdout
    # The demo never starts an embedded service when a server is configured.
    assert not (tmp_path / "warehouse.pid").exists()


def test_wrong_clickhouse_credentials_name_the_variables(warehouse_service_auth, tmp_path):
    from atlasmesh.warehouse.client import WarehouseConnectionError, connect

    settings = Settings(
        home=tmp_path,
        clickhouse_url=warehouse_service_auth.url,
        clickhouse_user="analyst",
        clickhouse_password=SECRET,
    )
    with pytest.raises(WarehouseConnectionError) as err:
        connect(settings)
    assert "refused user 'analyst'" in str(err.value)
    assert "ATLASMESH_CLICKHOUSE_PASSWORD" in str(err.value) and SECRET not in str(err.value)


def test_something_else_at_the_clickhouse_url_is_named(s3_server, tmp_path):
    from atlasmesh.warehouse.client import WarehouseConnectionError, connect

    settings = Settings(home=tmp_path, clickhouse_url=s3_server.endpoint_url)
    with pytest.raises(WarehouseConnectionError, match="did not answer like a ClickHouse HTTP"):
        connect(settings)


def test_wrong_s3_credentials_stop_the_demo_with_one_line(warehouse_service, s3_server, tmp_path):
    env = _scale_out_env(
        tmp_path,
        ATLASMESH_CLICKHOUSE_URL=warehouse_service.url,
        ATLASMESH_LAKE_URL=f"s3://{s3_server.bucket}/scale-out",
        ATLASMESH_S3_ENDPOINT_URL=s3_server.endpoint_url,
        ATLASMESH_S3_ACCESS_KEY_ID=s3_server.access_key,
        ATLASMESH_S3_SECRET_ACCESS_KEY=SECRET,
    )
    result = _run(["-m", "orchestration.demo"], env)
    assert result.returncode == 1, result.stderr
    assert "demo: error: S3 refused to open the bucket" in result.stderr
    assert "ATLASMESH_S3_SECRET_ACCESS_KEY" in result.stderr
    assert "Traceback" not in result.stderr and SECRET not in result.stderr + result.stdout
    assert not (tmp_path / "warehouse.pid").exists()


def test_unreachable_dagster_postgres_is_named_with_its_password_masked(monkeypatch):
    from orchestration.demo import check_dagster_storage

    url = f"postgresql://dagster:{SECRET}@127.0.0.1:{free_port()}/dagster"
    monkeypatch.setenv("ATLASMESH_DAGSTER_POSTGRES_URL", url)
    with pytest.raises(SystemExit) as err:
        check_dagster_storage(Settings(), timeout_s=2)
    message = str(err.value.code)
    assert message.startswith("demo: error: cannot open Dagster's PostgreSQL storage")
    assert "ATLASMESH_DAGSTER_POSTGRES_URL" in message and "dagster:***@127.0.0.1" in message
    assert SECRET not in message


@pytest.mark.parametrize(
    "url", [f"dagster:{SECRET}@db/dagster", f"postgres://dagster:{SECRET}@db/dagster"]
)
def test_a_dagster_postgres_url_dagster_cannot_use_is_refused_unechoed(url, monkeypatch):
    from orchestration.demo import check_dagster_storage

    monkeypatch.setenv("ATLASMESH_DAGSTER_POSTGRES_URL", url)
    with pytest.raises(SystemExit) as err:
        check_dagster_storage(Settings(), timeout_s=2)
    message = str(err.value.code)
    assert "postgresql://user[:password]@host:port/database" in message
    assert SECRET not in message


def test_the_demo_summary_hides_secrets_and_says_how_to_reach_the_server(monkeypatch):
    from orchestration.demo import _stop_hint, summary_places

    monkeypatch.setenv("ATLASMESH_LAKE_URL", "s3://fleet-lake/prod")
    monkeypatch.setenv("ATLASMESH_S3_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("ATLASMESH_CLICKHOUSE_URL", "https://ch.internal:8443")
    monkeypatch.setenv("ATLASMESH_CLICKHOUSE_PASSWORD", SECRET)
    monkeypatch.setenv("ATLASMESH_FLEET_CORE_DSN", f"postgresql+psycopg://fc:{SECRET}@db/fleet")
    settings = Settings()
    places = summary_places(settings, settings.warehouse_url)
    assert "s3://fleet-lake/prod" in places and "https://ch.internal:8443" in places
    assert "postgresql+psycopg://fc:***@db/fleet" in places
    # A curl that works against a server with a password, naming the variables only.
    assert '-u "$ATLASMESH_CLICKHOUSE_USER:$ATLASMESH_CLICKHOUSE_PASSWORD"' in places
    assert SECRET not in places
    assert "make stop" not in _stop_hint(settings)


def test_warehouse_status_names_an_unanswering_server_not_the_embedded_service(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    env = _scale_out_env(tmp_path, ATLASMESH_CLICKHOUSE_URL=url)
    result = _run(["-c", "from atlasmesh.cli import main; main()", "warehouse", "status"], env)
    assert result.returncode == 1
    assert f"the ClickHouse server at {url} does not answer" in result.stderr
