"""Realistic gateway faults, injected into wire lines at configured rates and tagged for the truth.

Every faulty line carries exactly one fault, so the class recorded in the ground truth
is the one reason ingestion must give. Content faults rewrite the line; delivery faults
(DUPLICATE, LATE_ARRIVAL, OUT_OF_ORDER) keep its bytes and change when it arrives;
TRUNCATED_FILE cuts a whole delivered file (see writer.py).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np
import orjson

from atlasmesh.simulator.config import LINE_FAULTS
from atlasmesh.telemetry import policy
from atlasmesh.telemetry.reasons import FaultClass

# Margins keep every injected fault unambiguous against the ingestion limits in
# atlasmesh/telemetry/policy.py, whatever the exact batch latency.
CLOCK_SKEW_MAX_S = 45.0  # CLOCK_SKEW stays well within policy.MAX_FUTURE_SKEW (5 min)
FUTURE_MIN = policy.MAX_FUTURE_SKEW * 12  # one hour ahead at least
ANCIENT_MIN = policy.ANCIENT_HORIZON * 2
LATE_DELAY_S = (3600.0, 6 * 3600.0)  # held back one to six hours: always a later arrival hour
OVERSIZED_BYTES = policy.MAX_LINE_BYTES + 16 * 1024
FAULT_CODES: dict[FaultClass, int] = {f: i for i, f in enumerate(FaultClass)}
FAULT_BY_CODE: tuple[FaultClass, ...] = tuple(FaultClass)
NO_FAULT = -1
DELIVERY_FAULTS = (FaultClass.DUPLICATE, FaultClass.LATE_ARRIVAL, FaultClass.OUT_OF_ORDER)

_REQUIRED = ("telemetry_id", "vehicle_id", "recorded_at", "location", "speed_kmh", "sensor_readings",
             "diagnostic_codes", "operational_status")  # fmt: skip


def _stamp(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _heading_key(obj: dict) -> str:
    return "heading_deg" if "heading_deg" in obj else "heading_degrees"


def _energy_key(obj: dict) -> str:
    return (
        "battery_level_percent"
        if obj.get("battery_level_percent") is not None
        else "fuel_level_percent"
    )


class Injector:
    """Rewrites one line for one content fault class; `rng` is the block's fault stream."""

    def __init__(self, rng: np.random.Generator, ghost_ids: list[str]) -> None:
        self.rng = rng
        self.ghosts = ghost_ids
        self._content: dict[FaultClass, Callable[[bytes, int], tuple[bytes, str]]] = {
            FaultClass.INVALID_UTF8: self.invalid_utf8,
            FaultClass.OVERSIZED_LINE: self.oversized,
            FaultClass.MALFORMED_JSON: self.malformed,
            FaultClass.NOT_AN_OBJECT: self.not_an_object,
            FaultClass.UNKNOWN_SCHEMA: self.unknown_schema,
            FaultClass.MISSING_FIELD: self.missing_field,
            FaultClass.WRONG_TYPE: self.wrong_type,
            FaultClass.NON_FINITE: self.non_finite,
            FaultClass.OUT_OF_RANGE: self.out_of_range,
            FaultClass.INVALID_TIMESTAMP: self.invalid_timestamp,
            FaultClass.FUTURE_TIMESTAMP: self.future_timestamp,
            FaultClass.ANCIENT_TIMESTAMP: self.ancient_timestamp,
            FaultClass.UNKNOWN_VEHICLE: self.unknown_vehicle,
            FaultClass.CLOCK_SKEW: self.clock_skew,
        }

    def apply(self, fault: FaultClass, line: bytes, true_ms: int) -> tuple[bytes, str]:
        """The faulty line and a short description of what was done to it."""
        return self._content[fault](line, true_ms)

    def _pick(self, options: tuple) -> object:
        return options[int(self.rng.integers(len(options)))]

    @staticmethod
    def _dump(obj: object) -> bytes:
        return orjson.dumps(obj)

    def invalid_utf8(self, line: bytes, _: int) -> tuple[bytes, str]:
        obj = orjson.loads(line)
        obj.setdefault("custom_data", {})["note"] = "__BYTES__"
        # A Latin-1 degree sign from an old gateway's log message: not UTF-8.
        return self._dump(obj).replace(
            b'"__BYTES__"', b'"cabin 21\xb0C"'
        ), "latin-1 byte in custom_data.note"

    def oversized(self, line: bytes, _: int) -> tuple[bytes, str]:
        obj = orjson.loads(line)
        obj.setdefault("custom_data", {})["debug_dump"] = "0123456789abcdef" * (
            OVERSIZED_BYTES // 16
        )
        out = self._dump(obj)
        return out, f"{len(out)} bytes (limit {policy.MAX_LINE_BYTES})"

    def malformed(self, line: bytes, _: int) -> tuple[bytes, str]:
        variant = self._pick(("cut", "brace", "quote", "comma"))
        if variant == "cut":
            return line[: int(len(line) * float(self.rng.uniform(0.2, 0.9)))], "line cut mid-record"
        if variant == "brace":
            return line[:-1], "closing brace missing"
        if variant == "quote":
            return line.replace(b'"speed_kmh"', b"speed_kmh", 1), "unquoted key"
        return line.replace(b",", b",,", 1), "double comma"

    def not_an_object(self, line: bytes, _: int) -> tuple[bytes, str]:
        variant = self._pick(("array", "string", "number"))
        obj = orjson.loads(line)
        if variant == "array":
            loc = obj["location"]
            return self._dump(
                [obj["telemetry_id"], obj["vehicle_id"], obj["recorded_at"], loc["lat"], loc["lon"]]
            ), "JSON array"
        if variant == "string":
            return self._dump(line.decode()), "object encoded twice (JSON string)"
        return b"0", "bare number"

    def unknown_schema(self, line: bytes, _: int) -> tuple[bytes, str]:
        obj = orjson.loads(line)
        obj["schema_version"] = self._pick(("3.0.0", "0.9.0", "7.1.2"))
        return self._dump(obj), f"schema_version {obj['schema_version']}"

    def missing_field(self, line: bytes, _: int) -> tuple[bytes, str]:
        obj = orjson.loads(line)
        options = (
            _REQUIRED
            + (("odometer_km", "firmware_version") if "odometer_km" in obj else ())
            + (_heading_key(obj),)
        )
        name = str(self._pick(options))
        if self.rng.random() < 0.3:
            obj[name] = None
            return self._dump(obj), f"{name} is null"
        del obj[name]
        return self._dump(obj), f"{name} absent"

    def wrong_type(self, line: bytes, _: int) -> tuple[bytes, str]:
        obj = orjson.loads(line)
        variant = self._pick(
            (
                "speed_string",
                "bare_pair",
                "dtc_string",
                "lat_string",
                "status_number",
                "sensors_list",
            )
        )
        if variant == "speed_string":
            obj["speed_kmh"] = str(obj["speed_kmh"])
        elif variant == "bare_pair":
            obj["location"] = [obj["location"]["lat"], obj["location"]["lon"]]
        elif variant == "dtc_string":
            obj["diagnostic_codes"] = ",".join(obj["diagnostic_codes"]) or "none"
        elif variant == "lat_string":
            obj["location"]["lat"] = f"{obj['location']['lat']:.6f}"
        elif variant == "status_number":
            obj["operational_status"] = 3
        else:
            obj["sensor_readings"] = list(obj["sensor_readings"].values())
        return self._dump(obj), str(variant)

    def non_finite(self, line: bytes, _: int) -> tuple[bytes, str]:
        obj = orjson.loads(line)
        literal = self._pick((b"NaN", b"Infinity", b"-Infinity"))
        where = self._pick(("speed_kmh", "lat", "sensor"))
        if where == "lat":
            obj["location"]["lat"] = "__NF__"
        elif where == "sensor":
            key = sorted(obj["sensor_readings"])[
                int(self.rng.integers(len(obj["sensor_readings"])))
            ]
            obj["sensor_readings"][key] = "__NF__"
            where = f"sensor_readings.{key}"
        else:
            obj["speed_kmh"] = "__NF__"
        return self._dump(obj).replace(b'"__NF__"', literal), f"{where} = {literal.decode()}"

    def out_of_range(self, line: bytes, _: int) -> tuple[bytes, str]:
        obj = orjson.loads(line)
        rng = self.rng
        variant = self._pick(("lat", "lon", "speed", "heading", "percent"))
        if variant == "lat":
            obj["location"]["lat"] = round(float(rng.choice([-1, 1]) * rng.uniform(90.5, 180)), 6)
        elif variant == "lon":
            obj["location"]["lon"] = round(float(rng.choice([-1, 1]) * rng.uniform(180.5, 360)), 6)
        elif variant == "speed":
            obj["speed_kmh"] = round(
                float(rng.choice([rng.uniform(320, 999), -rng.uniform(1, 40)])), 2
            )
        elif variant == "heading":
            obj[_heading_key(obj)] = round(
                float(rng.choice([rng.uniform(360, 720), -rng.uniform(1, 180)])), 1
            )
        else:
            obj[_energy_key(obj)] = round(
                float(rng.choice([rng.uniform(100.5, 250), -rng.uniform(1, 50)])), 1
            )
        return self._dump(obj), str(variant)

    def invalid_timestamp(self, line: bytes, true_ms: int) -> tuple[bytes, str]:
        obj = orjson.loads(line)
        t = datetime.fromtimestamp(true_ms / 1000, UTC)
        obj["recorded_at"] = str(
            self._pick(
                (
                    t.strftime("%Y-%m-%d %H:%M:%S"),
                    t.strftime("%d/%m/%Y %H:%M:%S"),
                    t.strftime("%Y-%m-%dT%H:%M:%S.000"),
                    (t + timedelta(hours=4)).strftime("%Y-%m-%dT%H:%M:%S.000+04:00"),
                    t.strftime("%Y-13-%dT%H:%M:%S.000Z"),
                    str(true_ms // 1000),
                )
            )
        )
        return self._dump(obj), f"recorded_at {obj['recorded_at']!r}"

    def _retime(self, line: bytes, ms: int, detail: str) -> tuple[bytes, str]:
        obj = orjson.loads(line)
        obj["recorded_at"] = _stamp(ms)
        return self._dump(obj), detail

    def future_timestamp(self, line: bytes, true_ms: int) -> tuple[bytes, str]:
        ahead = FUTURE_MIN.total_seconds() * float(self.rng.uniform(1, 24 * 400))
        return self._retime(line, true_ms + int(ahead * 1000), f"clock {ahead / 3600:.1f} h ahead")

    def ancient_timestamp(self, line: bytes, true_ms: int) -> tuple[bytes, str]:
        variant = self._pick(("epoch", "gps_rollover", "months"))
        if variant == "epoch":
            # Real-time clock reset: time counts from 1970 again since power-up.
            ms = int(self.rng.integers(0, 30 * 86_400_000))
        elif variant == "gps_rollover":
            ms = true_ms - 1024 * 7 * 86_400_000
        else:
            ms = true_ms - int(ANCIENT_MIN.total_seconds() * 1000 * float(self.rng.uniform(1, 10)))
        return self._retime(line, ms, str(variant))

    def clock_skew(self, line: bytes, true_ms: int) -> tuple[bytes, str]:
        skew = float(self.rng.uniform(2, CLOCK_SKEW_MAX_S)) * float(self.rng.choice([-1, 1]))
        return self._retime(line, true_ms + int(skew * 1000), f"clock {skew:+.1f} s")

    def unknown_vehicle(self, line: bytes, _: int) -> tuple[bytes, str]:
        obj = orjson.loads(line)
        obj["vehicle_id"] = str(self._pick(tuple(self.ghosts)))
        return self._dump(obj), f"unregistered unit {obj['vehicle_id']}"


def draw_faults(rng: np.random.Generator, n: int, rates: dict[FaultClass, float]) -> np.ndarray:
    """Per event, the code of its injected fault class or NO_FAULT."""
    classes = list(LINE_FAULTS)
    p = np.array([rates.get(f, 0.0) for f in classes])
    total = float(p.sum())
    codes = np.full(n, NO_FAULT, dtype=np.int8)
    if total <= 0 or n == 0:
        return codes
    faulty = rng.random(n) < total
    picked = rng.choice(len(classes), size=int(faulty.sum()), p=p / total)
    codes[faulty] = np.array([FAULT_CODES[c] for c in classes], dtype=np.int8)[picked]
    return codes
