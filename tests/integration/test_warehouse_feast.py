"""Feast's ClickHouse offline store, unmodified, serves features from the warehouse service."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _forget_feast_client() -> None:
    # Feast caches one clickhouse-connect client per thread whatever the config; another
    # test on this worker must not inherit this test's database.
    from feast.infra.utils.clickhouse import connection_utils

    connection_utils.thread_local.__dict__.pop("clickhouse_client", None)


def test_point_in_time_join_and_materialisation(
    warehouse_service, ch_client, ch_database, tmp_path
):
    import pandas as pd
    from feast import Entity, FeatureStore, FeatureView, Field, RepoConfig, ValueType
    from feast.infra.offline_stores.contrib.clickhouse_offline_store.clickhouse_source import (
        ClickhouseSource,
    )
    from feast.repo_config import RegistryConfig
    from feast.types import Float64, Int64

    ch_client.command(
        "CREATE TABLE vehicle_day (vehicle_id String, event_timestamp DateTime64(6, 'UTC'), "
        "created DateTime64(6, 'UTC'), distance_km Float64, dtc_count Int64) "
        "ENGINE = MergeTree ORDER BY (vehicle_id, event_timestamp)"
    )
    rows = [
        [
            vehicle,
            T0 + timedelta(days=day),
            T0 + timedelta(days=day, hours=1),
            10.0 * day + bump,
            day,
        ]
        for vehicle, bump in (("veh-a", 0.0), ("veh-b", 0.5))
        for day in range(5)
    ]
    # A correction of veh-a's day 2, written later: the latest `created` wins.
    rows.append(["veh-a", T0 + timedelta(days=2), T0 + timedelta(days=3), 99.0, 7])
    ch_client.insert(
        "vehicle_day",
        rows,
        column_names=["vehicle_id", "event_timestamp", "created", "distance_km", "dtc_count"],
    )

    settings = warehouse_service.settings
    config = RepoConfig(
        project="warehouse_probe",
        provider="local",
        registry=RegistryConfig(path=str(tmp_path / "registry.db")),
        offline_store={
            "type": "clickhouse",
            "host": "127.0.0.1",
            "port": settings.warehouse_port,
            "database": ch_database,
            "user": settings.clickhouse_user,
            "password": settings.clickhouse_password.get_secret_value(),
            # Outside a feature's TTL Feast expects nulls; ClickHouse's LEFT JOIN gives
            # default values unless told otherwise, on a real server as here.
            "additional_client_args": {"settings": {"join_use_nulls": 1}},
        },
        online_store={"type": "sqlite", "path": str(tmp_path / "online.db")},
        entity_key_serialization_version=3,
        repo_path=str(tmp_path),
    )
    vehicle = Entity(name="vehicle", join_keys=["vehicle_id"], value_type=ValueType.STRING)
    view = FeatureView(
        name="vehicle_day",
        entities=[vehicle],
        ttl=timedelta(days=2),
        schema=[Field(name="distance_km", dtype=Float64), Field(name="dtc_count", dtype=Int64)],
        source=ClickhouseSource(
            name="vehicle_day",
            table=f"{ch_database}.vehicle_day",
            timestamp_field="event_timestamp",
            created_timestamp_column="created",
        ),
    )
    _forget_feast_client()
    try:
        store = FeatureStore(config=config)
        store.apply([vehicle, view])
        # The entity frame travels as a session temporary table, as on a real server.
        entities = pd.DataFrame(
            {
                "vehicle_id": ["veh-a", "veh-b", "veh-a", "veh-b"],
                "event_timestamp": [
                    T0 + timedelta(days=2, hours=5),
                    T0 + timedelta(days=4, hours=1),
                    T0 + timedelta(days=9),
                    T0 - timedelta(days=1),
                ],
            }
        )
        found = (
            store.get_historical_features(
                entity_df=entities, features=["vehicle_day:distance_km", "vehicle_day:dtc_count"]
            )
            .to_df()
            .sort_values("event_timestamp")
        )
        by_time = {
            row.event_timestamp.to_pydatetime(): (row.vehicle_id, row.distance_km, row.dtc_count)
            for row in found.itertuples()
        }
        assert by_time[T0 + timedelta(days=2, hours=5)] == ("veh-a", 99.0, 7)
        assert by_time[T0 + timedelta(days=4, hours=1)] == ("veh-b", 40.5, 4)
        for stale in (T0 + timedelta(days=9), T0 - timedelta(days=1)):
            _, distance, dtc = by_time[stale]
            assert math.isnan(distance) and math.isnan(dtc)

        # Materialisation reads the latest row per vehicle from the warehouse.
        store.materialize(T0, T0 + timedelta(days=10))
        online = store.get_online_features(
            features=["vehicle_day:distance_km"],
            entity_rows=[{"vehicle_id": "veh-a"}, {"vehicle_id": "veh-b"}],
        ).to_dict()
        assert online == {"vehicle_id": ["veh-a", "veh-b"], "distance_km": [40.0, 40.5]}
    finally:
        _forget_feast_client()
