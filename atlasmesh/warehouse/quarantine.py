"""Quarantine of telemetry hours that failed their quality gate: kept aside, out of the hot path.

The hot path is what the marts, features and analysts read, so a failed hour must leave it;
its rows stay inspectable in `vehicle_telemetry_quarantine` (same structure, same 90-day TTL)
until a corrected re-run passes the gate and reloads the hour.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from atlasmesh.warehouse.telemetry import (
    DATABASE,
    TELEMETRY_TABLE,
    LoadResult,
    _q,
    load_hour,
    partition_id,
)

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

QUARANTINE_TABLE = "vehicle_telemetry_quarantine"


def quarantine_hour(
    client: Client, hour: datetime, *, database: str = DATABASE, load_id: str | None = None
) -> LoadResult:
    """Copy one event hour into the quarantine table, then clear it (and its metrics) from the hot path."""
    quarantine, telemetry = _q(database, QUARANTINE_TABLE), _q(database, TELEMETRY_TABLE)
    client.command(f"CREATE TABLE IF NOT EXISTS {quarantine} AS {telemetry}")
    # One atomic swap replaces an older quarantine of the same hour with this one.
    client.command(
        f"ALTER TABLE {quarantine} REPLACE PARTITION ID '{partition_id(hour)}' FROM {telemetry}"
    )
    # An empty load drops the hour and rebuilds its day of metrics, as any reload would.
    return load_hour(client, hour, [], load_id=load_id, database=database, source="quarantine")


def quarantined_rows(client: Client, hour: datetime, *, database: str = DATABASE) -> int:
    """Rows of an event hour held in quarantine (0 when the table does not exist)."""
    if not int(client.command(f"EXISTS TABLE {_q(database, QUARANTINE_TABLE)}")):
        return 0
    return int(
        client.command(
            f"SELECT count() FROM {_q(database, QUARANTINE_TABLE)} "
            f"WHERE _partition_id = '{partition_id(hour)}'"
        )
    )
