"""The quality trend mart over score histories the gates can write: re-gated and undated partitions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from atlasmesh.analytics import run_dbt
from quality import score as qs

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def _score(dataset: str, partition: str, value: float, at: datetime) -> qs.QualityScore:
    dims = [qs.DimensionScore("completeness", value, value >= 90)]
    return qs.combine(dataset, partition, dims, measured_at=at, run_id=uuid.uuid4().hex)


def test_trend_takes_regated_hours_once_and_dates_undated_partitions_by_measurement(
    warehouse_service, tmp_path
):
    ops, schema = f"ops_{uuid.uuid4().hex[:8]}", f"trend_{uuid.uuid4().hex[:8]}"
    client = warehouse_service.client()
    day = datetime(2026, 11, 20, tzinfo=UTC)
    try:
        qs.store_scores(
            client,
            [
                # An hour gated, failed, then re-gated after a fix: the latest decides.
                _score("vehicle_telemetry", "2026-11-20-10:00", 50.0, day + timedelta(hours=11)),
                _score("vehicle_telemetry", "2026-11-20-10:00", 100.0, day + timedelta(hours=15)),
                _score("vehicle_telemetry", "2026-11-20-11:00", 80.0, day + timedelta(hours=12)),
                # `store_score(client, score_validation(validate_fleet_core(...)[0]))`, as
                # docs/quality.md shows: the snapshot's partition is 'current', not a date.
                _score("fleet_core.vehicles", "current", 70.0, day + timedelta(hours=1)),
                _score("fleet_core.vehicles", "current", 100.0, day + timedelta(days=1, hours=1)),
            ],
            database=ops,
        )
        result = run_dbt(
            warehouse_service.settings,
            ["build", "--select", "stg_ops__quality_scores", "quality_score_trend"],
            schema=schema,
            dbt_vars={"ops_database": ops},
            target_path=tmp_path / "dbt",
            capture=True,
            timeout=500,
        )
        # parseDateTimeBestEffort('current') failed the whole model before.
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
        rows = client.query(
            "SELECT dataset, partition_date, partitions, failed_partitions, avg_score "
            f"FROM `{schema}`.quality_score_trend ORDER BY dataset, partition_date"
        ).result_rows
        assert [(d, str(p), n, f, s) for d, p, n, f, s in rows] == [
            ("fleet_core.vehicles", "2026-11-20", 1, 1, 70.0),
            ("fleet_core.vehicles", "2026-11-21", 1, 0, 100.0),
            ("vehicle_telemetry", "2026-11-20", 2, 1, 90.0),
        ]
    finally:
        for database in (ops, schema, f"{schema}_staging", f"{schema}_intermediate"):
            client.command(f"DROP DATABASE IF EXISTS `{database}` SYNC")
        client.close()
