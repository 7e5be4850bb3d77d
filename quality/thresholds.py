"""Every data-quality threshold in one place, each with the reason it has its value."""

from __future__ import annotations

from datetime import timedelta

from atlasmesh.telemetry import policy
from atlasmesh.telemetry.registry import SENSOR_FIELDS

# --- The seed's six dimensions (§8.2) ---------------------------------------------------------

# Seed §8.2: "90%+ required fields". Measured on accepted rows over the fields the platform
# expects beyond the ones ingestion already refuses to miss (EXPECTED_FIELDS below): a
# partition where more than one value in ten is absent no longer supports its metrics.
COMPLETENESS_MIN = 0.90

# Seed §8.2: "< 1% error rate". A rule violation is a row that breaks a plausibility rule
# validation cannot see on one record alone (odometer going backwards, a jump faster than any
# vehicle, a value in the wrong unit). At 1 Hz one bad GPS fix per vehicle-minute is 1.7%,
# which is a broken receiver, not noise, so 1% separates the two.
ACCURACY_MAX_VIOLATION_RATE = 0.01

# Seed §8.2: "cross-system validation". Ingestion already dead-letters unknown vehicles and
# the hot path is loaded from the processed Parquet, so any disagreement (a vehicle missing
# from fleet-core, a row count that differs from the lake) is a defect: no tolerance.
CONSISTENCY_MIN = 1.0

# Seed §8.2: "< 30 s ingestion latency", p95 per ARCHITECTURE §5 ("in streaming").
INGESTION_LATENCY_P95_S = 30.0
# Gateways deliver telemetry in files per batch window (60 s at 1 Hz sampling, see the
# simulator's gateway_batch_s), so an event waits up to one window before it can arrive; the
# batch path is held to the window plus the seed's streaming target.
GATEWAY_BATCH_WINDOW_S = 60.0
ARRIVAL_LATENCY_P95_S = GATEWAY_BATCH_WINDOW_S + INGESTION_LATENCY_P95_S
# Share of rows that must meet a latency bound: "p95 below the bound" is "95% within it".
TIMELINESS_MIN_SHARE = 0.95
# From recorded_at to queryable: an event-hour partition is loaded once it has settled (the
# hour itself, then policy.PARTITION_SETTLE_DELAY for late gateways), plus an hour for the
# scheduled run to stage, build and load it. A backfilled hour fails this, as it should.
QUERYABLE_LATENCY_BUDGET = timedelta(hours=1) + policy.PARTITION_SETTLE_DELAY + timedelta(hours=1)

# Seed §8.2: "schema compliance". Healthy gateways dead-letter well under 1% of lines (a
# truncated upload, an odd firmware glitch); above 2% a firmware or gateway release is
# sending broken records and the on-call must look.
VALIDITY_MAX_DEAD_LETTER_RATE = 0.02

# Seed §8.2: "duplicate detection". Duplicates are gateway retries (at-least-once delivery)
# and truncated uploads sent again; ingestion removes them, but above 5% of deliveries the
# acknowledgements are being lost and the retries cost bandwidth and lateness. Duplicates
# that reach the warehouse are never tolerated (checked separately, exactly).
UNIQUENESS_MAX_DUPLICATE_RATE = 0.05

# --- How the dimensions combine into one 0-100 score ------------------------------------------

# Completeness and accuracy decide whether the numbers computed from a partition are right,
# so they weigh most; the other four say whether it can be trusted and used in time.
DIMENSION_WEIGHTS: dict[str, float] = {
    "completeness": 0.20,
    "accuracy": 0.20,
    "consistency": 0.15,
    "timeliness": 0.15,
    "validity": 0.15,
    "uniqueness": 0.15,
}
DIMENSIONS: tuple[str, ...] = tuple(DIMENSION_WEIGHTS)

# --- Telemetry rules (the suite and the score use the same numbers) ---------------------------

# The fields a telemetry row should carry beyond the ones ingestion refuses to miss, with the
# ClickHouse expression that is true when the row has it. Every vehicle reports an energy
# level (battery for EVs, fuel otherwise) and at least one sensor of its profile; the
# environment block feeds the consumption models; 2.x firmware adds odometer and firmware
# version (1.x cannot send them, so their rows are not held against it).
EXPECTED_FIELDS: dict[str, str] = {
    "energy_level": "battery_level_percent IS NOT NULL OR fuel_level_percent IS NOT NULL",
    "sensor_readings": f"coalesce({', '.join(f.name for f in SENSOR_FIELDS)}) IS NOT NULL",
    "environmental_conditions": "environmental_conditions IS NOT NULL",
    "odometer_km": "odometer_km IS NOT NULL OR startsWith(schema_version, '1.')",
    "firmware_version": "firmware_version IS NOT NULL OR startsWith(schema_version, '1.')",
}

# Odometers report to the metre (3 decimals on the wire); a decrease beyond rounding is a
# counter fault or a swapped unit.
ODOMETER_DECREASE_TOLERANCE_KM = 0.005
# Consecutive fixes may jitter by a few tens of metres with a consumer GPS; distance within
# this allowance never counts as movement, so a parked vehicle cannot "jump".
GPS_JITTER_M = 50.0
# The fleet's fastest profiles top out well under the validator's 300 km/h ceiling
# (policy.SPEED_KMH_RANGE); moving faster than that between two fixes is a bad fix.
MAX_IMPLIED_SPEED_KMH = policy.SPEED_KMH_RANGE[1]
# Below this gap two fixes are the same instant for the purpose of speed: an implied speed
# over a few milliseconds is noise, not a jump.
MIN_STEP_S = 0.5

# Units: the validator's ranges are physical limits (a refused value is a broken sensor);
# these bands are where a value in the right unit lands, so a value in the wrong unit (psi or
# bar instead of kPa, millivolts or a 0-1 fraction) falls outside even though it is in range.
TIRE_PRESSURE_KPA_BAND = (80.0, 1000.0)  # car 180-250 kPa, truck up to ~900; 35 psi is 35
AUX_BATTERY_V_BAND = (8.0, 32.0)  # 12 V and 24 V systems, flat to charging

# --- Marts ---------------------------------------------------------------------------------

# A mart period's rows may differ from the previous period's by this share before it is
# suspicious: fleets grow and shrink by a few vehicles a day, never by half.
MART_ROW_COUNT_CHANGE_MAX = 0.5
# Totals that reconcile with their source may differ by rounding only.
RECONCILE_RELATIVE_TOLERANCE = 1e-6

# --- Data Docs ------------------------------------------------------------------------------

# The Data Docs index lists this many most recent validation runs (a week of hourly gates);
# older runs keep their pages, linked from the score table and asset metadata.
DOCS_INDEX_RUNS = 168
