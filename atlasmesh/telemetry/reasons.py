"""The one list of telemetry fault classes: dead-letter reason codes and simulator fault tags."""

from __future__ import annotations

from enum import StrEnum


class Disposition(StrEnum):
    """Where a record of a fault class must end after ingestion."""

    DEAD_LETTER = "dead_letter"
    DUPLICATE = "duplicate"
    ACCEPTED = "accepted"


class FaultClass(StrEnum):
    """A reason a raw telemetry line is not a clean, on-time, unique event."""

    INVALID_UTF8 = "INVALID_UTF8"
    OVERSIZED_LINE = "OVERSIZED_LINE"
    MALFORMED_JSON = "MALFORMED_JSON"
    NOT_AN_OBJECT = "NOT_AN_OBJECT"
    TRUNCATED_FILE = "TRUNCATED_FILE"
    UNKNOWN_SCHEMA = "UNKNOWN_SCHEMA"
    MISSING_FIELD = "MISSING_FIELD"
    WRONG_TYPE = "WRONG_TYPE"
    NON_FINITE = "NON_FINITE"
    OUT_OF_RANGE = "OUT_OF_RANGE"
    INVALID_TIMESTAMP = "INVALID_TIMESTAMP"
    FUTURE_TIMESTAMP = "FUTURE_TIMESTAMP"
    ANCIENT_TIMESTAMP = "ANCIENT_TIMESTAMP"
    UNKNOWN_VEHICLE = "UNKNOWN_VEHICLE"
    DUPLICATE = "DUPLICATE"
    LATE_ARRIVAL = "LATE_ARRIVAL"
    OUT_OF_ORDER = "OUT_OF_ORDER"
    CLOCK_SKEW = "CLOCK_SKEW"

    @property
    def disposition(self) -> Disposition:
        """Where ingestion must put a record of this class."""
        if self is FaultClass.DUPLICATE:
            return Disposition.DUPLICATE
        # Late, reordered and slightly skewed events are real data: they must be accepted
        # into the partition of their recorded_at, not refused.
        if self in (FaultClass.LATE_ARRIVAL, FaultClass.OUT_OF_ORDER, FaultClass.CLOCK_SKEW):
            return Disposition.ACCEPTED
        return Disposition.DEAD_LETTER


DESCRIPTIONS: dict[FaultClass, str] = {
    FaultClass.INVALID_UTF8: "line bytes are not valid UTF-8",
    FaultClass.OVERSIZED_LINE: "line longer than the maximum accepted size",
    FaultClass.MALFORMED_JSON: "line is not parseable JSON",
    FaultClass.NOT_AN_OBJECT: "line is JSON but not an object",
    FaultClass.TRUNCATED_FILE: "gzip batch ends mid-stream; the partial tail is kept as evidence",
    FaultClass.UNKNOWN_SCHEMA: "schema_version is not in the registry",
    FaultClass.MISSING_FIELD: "a required field is absent or null",
    FaultClass.WRONG_TYPE: "a field has the wrong JSON type",
    FaultClass.NON_FINITE: "a numeric field is NaN or Infinity",
    FaultClass.OUT_OF_RANGE: "coordinates, speed, heading or a percentage outside its range",
    FaultClass.INVALID_TIMESTAMP: "recorded_at is not an RFC 3339 UTC timestamp",
    FaultClass.FUTURE_TIMESTAMP: "recorded_at is later than arrival beyond the skew tolerance",
    FaultClass.ANCIENT_TIMESTAMP: "recorded_at is older than the lateness horizon",
    FaultClass.UNKNOWN_VEHICLE: "vehicle_id is not a fleet-core vehicle",
    FaultClass.DUPLICATE: "same telemetry_id, or same vehicle, recorded_at and content",
    FaultClass.LATE_ARRIVAL: "delivered in a later arrival hour than its recorded_at hour",
    FaultClass.OUT_OF_ORDER: "delivered before an event recorded earlier by the same vehicle",
    FaultClass.CLOCK_SKEW: "vehicle clock off by less than the skew tolerance",
}
