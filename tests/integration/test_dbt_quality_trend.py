"""The quality-score trend mart agrees with the stored measurements, latest per partition."""

from __future__ import annotations

import polars as pl
import pytest

pytestmark = [
    pytest.mark.integration,
    pytest.mark.xdist_group("fleet"),
    pytest.mark.timeout(900),
]


def test_trend_averages_the_latest_score_of_each_partition(fleet_analytics):
    ops = fleet_analytics.fleet.ops_database
    stored = fleet_analytics.query_df(
        f"SELECT dataset, partition, measured_at, score, passed FROM {ops}.quality_scores"
    )
    assert stored.height >= 3
    latest = (
        stored.sort("measured_at")
        .group_by("dataset", "partition")
        .last()
        .with_columns(pl.col("partition").str.slice(0, 10).str.to_date().alias("partition_date"))
    )
    expected = (
        latest.group_by("dataset", "partition_date")
        .agg(
            pl.len().alias("partitions"),
            (~pl.col("passed")).sum().alias("failed_partitions"),
            pl.col("score").mean().alias("avg_score"),
        )
        .sort("dataset", "partition_date")
    )
    trend = fleet_analytics.query_df(
        "SELECT dataset, partition_date, partitions, failed_partitions, avg_score "
        "FROM quality_score_trend ORDER BY dataset, partition_date"
    )
    assert trend["partitions"].to_list() == expected["partitions"].to_list()
    assert trend["failed_partitions"].to_list() == expected["failed_partitions"].to_list()
    assert trend["avg_score"].to_list() == pytest.approx(expected["avg_score"].to_list())
    assert trend["partition_date"].to_list() == expected["partition_date"].to_list()
