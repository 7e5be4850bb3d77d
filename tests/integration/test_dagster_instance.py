"""Dagster's instance: SQLite under DAGSTER_HOME by default, the machine's PostgreSQL when configured."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml

from atlasmesh.settings import Settings
from orchestration.instance import POSTGRES_ENV, TEMPLATE, prepare_dagster_home
from tests.fixtures.postgres import throwaway_database
from tests.fixtures.services import Service

pytestmark = pytest.mark.integration


@dg.asset(partitions_def=dg.DailyPartitionsDefinition(start_date="2026-11-01"))
def daily_counts() -> None:
    """Stands for any partitioned asset."""


@dg.asset_check(asset=daily_counts, blocking=True)
def counts_add_up() -> dg.AssetCheckResult:
    """Fails, as a quality gate does: the alert sensor reads such evaluations back."""
    return dg.AssetCheckResult(passed=False, description="received != accepted + dropped")


@pytest.fixture
def dagster_pg_url(postgres_up: Service) -> Iterator[str]:
    """A database of its own: Dagster creates its tables in the public schema."""
    with throwaway_database(postgres_up, "atlasmesh_dagster") as name:
        yield f"postgresql://postgres@{postgres_up.host}:{postgres_up.port}/{name}"


def test_by_default_runs_and_events_live_in_one_sqlite_event_log(tmp_path: Path) -> None:
    config = yaml.safe_load(prepare_dagster_home(Settings(home=tmp_path), tmp_path).read_text())
    assert config["event_log_storage"]["class"] == "ConsolidatedSqliteEventLogStorage"
    assert "storage" not in config and config["telemetry"] == {"enabled": False}


def test_an_operators_own_instance_file_is_left_alone(tmp_path: Path) -> None:
    own = tmp_path / "dagster.yaml"
    own.write_text("telemetry:\n  enabled: false\n")
    prepare_dagster_home(Settings(home=tmp_path, dagster_postgres_url="postgresql://x/y"), tmp_path)
    assert own.read_text() == "telemetry:\n  enabled: false\n"


def test_with_a_postgres_url_runs_events_and_checks_are_stored_there(
    tmp_path: Path, dagster_pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    # A home prepared for SQLite (here by an earlier version: a plain copy of the template)
    # is switched over when the URL appears.
    (tmp_path / "dagster.yaml").write_text(TEMPLATE.read_text())
    monkeypatch.setenv(POSTGRES_ENV, dagster_pg_url)
    written = prepare_dagster_home(Settings(home=tmp_path), tmp_path).read_text()
    assert "postgres_url" in written and dagster_pg_url not in written  # an env reference

    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        result = dg.materialize(
            [daily_counts, counts_add_up],
            instance=instance,
            partition_key="2026-11-02",
            raise_on_error=False,
        )
        assert not result.success  # the blocking check failed the run
        # The query the alert sensor runs: check evaluations across runs, by storage id.
        records = instance.get_event_records(
            dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION),
            ascending=True,
        )
        assert [r.event_log_entry.dagster_event.event_specific_data.passed for r in records] == [
            False
        ]
        assert instance.get_materialized_partitions(daily_counts.key) == {"2026-11-02"}
        run_id = result.run_id

    with psycopg.connect(dagster_pg_url) as conn:
        stored = conn.execute("SELECT run_id, status FROM runs").fetchall()
    assert stored == [(run_id, "FAILURE")]
