"""Telemetry ingestion limits in one place: sizes, clock skew, lateness and value ranges."""

from __future__ import annotations

from datetime import timedelta

# A real event is about 0.8 KiB; 64 KiB leaves room for 80 DTCs and a large custom_data
# while refusing payloads that would blow up a column (a runaway firmware loop, a log dump).
MAX_LINE_BYTES = 64 * 1024

# An oversized line is kept in the DLQ as evidence, but no further than this: the landing
# file is immutable and retained, so source_file + line_number still lead to every byte.
DLQ_RAW_MAX_BYTES = 1024 * 1024

# A gzip member can expand ~1000x: decompress in steps of this size so one hostile file
# cannot take the worker's memory, and validate in blocks of about this many bytes. Three
# blocks are in flight (two validating, one being staged): staging 3.5 M events peaked at
# 944 MB with 32 MiB blocks, 636-647 MB with 16 MiB in the same time; 8 MiB saved 100 MB
# more but cost 8% more CPU.
DECOMPRESS_STEP_BYTES = 8 * 1024 * 1024
BLOCK_BYTES = 16 * 1024 * 1024
# ...and in blocks of at most this many lines: a refused line costs ~1 KB of Python while its
# block is judged, so a few KiB of gzip holding millions of empty or tiny lines took 1.2 GB
# per million lines. Real events (~0.8 KiB) fill BLOCK_BYTES with ~20 k lines, far below.
BLOCK_LINES = 65_536

# Vehicle clocks are GPS-disciplined; a few seconds of drift plus gateway buffering is
# normal. Beyond 5 minutes after arrival the clock is broken, and accepting the event would
# put it in an hour partition that has not happened yet.
MAX_FUTURE_SKEW = timedelta(minutes=5)

# Vehicles out of coverage (depots, tunnels, remote sites) upload their buffer when they
# come back; 30 days covers a month-long outage. It is also well inside the 90-day TTL of
# the hot ClickHouse table, so an accepted late event lives there at least 60 days instead
# of being deleted by the TTL on its first merge, and it bounds how far back a landing
# batch may re-open event-hour partitions (and how much dedup state must be kept).
ANCIENT_HORIZON = timedelta(days=30)

# An event-hour partition is expected to be complete this long after the hour ends (the
# gateways deliver every minute; two hours absorb retries and short outages). Metrics for
# an hour are first published after this; later arrivals (up to ANCIENT_HORIZON) still
# re-open the partition and downstream hourly metrics must be recomputed for it.
PARTITION_SETTLE_DELAY = timedelta(hours=2)

# How far back dedup state must reach: a re-sent event keeps its recorded_at, so its
# duplicate can only land in an event hour inside the lateness horizon.
DEDUP_HORIZON = ANCIENT_HORIZON

LATITUDE_RANGE = (-90.0, 90.0)
LONGITUDE_RANGE = (-180.0, 180.0)
# The fastest road vehicles in the fleet profiles top out well under 300 km/h; faster is a
# GPS glitch or a unit error (m/s vs km/h, mph), not a reading.
SPEED_KMH_RANGE = (0.0, 300.0)
# Compass degrees: 360 is the same heading as 0, so the upper bound is exclusive.
HEADING_DEGREES_RANGE = (0.0, 360.0)
PERCENT_RANGE = (0.0, 100.0)
# Ten million km is beyond any vehicle's life; negative odometers are counter faults.
ODOMETER_KM_RANGE = (0.0, 10_000_000.0)

# Sensor plausibility limits: physically possible for the hardware, so a refused value is a
# broken sensor or encoder (1e30, -999), never an unusual but real reading.
TEMPERATURE_C_RANGE = (-80.0, 400.0)
TIRE_PRESSURE_KPA_RANGE = (0.0, 1500.0)
VIBRATION_RMS_G_RANGE = (0.0, 100.0)
BRAKE_PAD_MM_RANGE = (0.0, 50.0)
AUX_BATTERY_V_RANGE = (0.0, 60.0)
LOAD_KG_RANGE = (0.0, 100_000.0)
ENERGY_RATE_RANGE = (0.0, 1000.0)
HUMIDITY_PERCENT_RANGE = PERCENT_RANGE
AMBIENT_TEMP_C_RANGE = (-90.0, 70.0)

OPERATIONAL_STATUSES = (
    "driving",
    "idle",
    "charging",
    "refueling",
    "parked",
    "maintenance",
    "fault",
    "offline",
)

# OBD-II style diagnostic trouble code: system letter, then four hex digits (P0A80).
DTC_PATTERN = r"^[PCBU][0-9A-F]{4}$"
