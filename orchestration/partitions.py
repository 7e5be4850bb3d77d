"""Partition definitions shared by the asset layers (UTC everywhere)."""

from __future__ import annotations

import dagster as dg

# Simulated and ingested history starts here; earlier dates have no data to backfill.
HISTORY_START = "2026-01-01"

# end_offset=1 makes the current, still-filling day/hour a partition, so "now" is
# materialisable (the demo's data ends at the current time).
daily = dg.DailyPartitionsDefinition(start_date=HISTORY_START, end_offset=1, timezone="UTC")
hourly = dg.HourlyPartitionsDefinition(
    start_date=f"{HISTORY_START}-00:00", end_offset=1, timezone="UTC"
)
