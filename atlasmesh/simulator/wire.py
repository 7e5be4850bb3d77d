"""Samples to wire-format JSON lines (docs/telemetry_wire_format.md), built column-wise in polars."""

from __future__ import annotations

import io

import numpy as np
import polars as pl

from atlasmesh.simulator.catalog import (
    COMPONENTS,
    FIRMWARE_V2,
    SENSOR_PROFILES,
    STATUS_NAMES,
)
from atlasmesh.simulator.telemetry import Samples
from atlasmesh.simulator.world import PRECIPITATION, ROAD_CONDITIONS, World

SCHEMA_V1 = "1.0.0"
SCHEMA_V2 = "2.0.0"
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S%.3fZ"
# Decimal places on the wire, as the vehicles' firmware rounds them.
_ROUND = {
    "lat": 6, "lon": 6, "speed_kmh": 2, "heading": 1, "energy": 1, "odometer_km": 3,
    "motor_temp_c": 1, "battery_temp_c": 1, "engine_temp_c": 1, "coolant_temp_c": 1,
    "tire_pressure_fl_kpa": 1, "tire_pressure_fr_kpa": 1, "tire_pressure_rl_kpa": 1,
    "tire_pressure_rr_kpa": 1, "vibration_rms_g": 3, "brake_pad_mm": 2, "aux_battery_v": 2,
    "load_kg": 1, "energy_rate": 2, "ambient_temp_c": 1, "humidity_percent": 0,
}  # fmt: skip
_HEX = np.frombuffer(b"".join(f"{i:02x}".encode() for i in range(256)), dtype=np.uint8).reshape(
    256, 2
)


def uuid_series(rng: np.random.Generator, n: int) -> pl.Series:
    """n random version-4 UUID strings from a seeded generator, built without a Python loop."""
    raw = np.frombuffer(rng.bytes(16 * n), dtype=np.uint8).reshape(n, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    hexed = _HEX[raw].reshape(n, 32)
    out = np.full((n, 36), ord("-"), dtype=np.uint8)
    for src, dst, width in ((0, 0, 8), (8, 9, 4), (12, 14, 4), (16, 19, 4), (20, 24, 12)):
        out[:, dst : dst + width] = hexed[:, src : src + width]
    return pl.Series("telemetry_id", np.ascontiguousarray(out).view("S36").ravel()).cast(pl.String)


class WireEncoder:
    """Encodes sample blocks of one world as JSON lines (bytes), in sample order."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.origin_ms = world.config.origin_ms
        vs = world.vehicles
        self.vehicle_ids = pl.Series("vehicle_id", [v.vehicle_id for v in vs])
        self.gateway_ids = pl.Series("gateway_id", [world.gateways[v.gateway] for v in vs])
        self.ev = np.array([v.model.powertrain == "ev" for v in vs])
        self.codes = [
            pl.Series(
                f"dtc{c}",
                [(comp.dtc_ev if v.model.powertrain == "ev" else comp.dtc_ice) for v in vs],
            )
            for c, comp in enumerate(COMPONENTS)
        ]

    def encode(self, samples: Samples, telemetry_ids: pl.Series) -> np.ndarray:
        """One JSON line (bytes, no newline) per sample, as an object array in sample order."""
        n = len(samples.vehicle)
        vehicle = pl.Series(samples.vehicle)
        cols = {k: np.round(v, _ROUND[k]) for k, v in samples.columns.items() if k in _ROUND}
        # 359.96 rounds to 360.0, which is outside [0, 360): wrap after rounding.
        cols["heading"] %= 360.0
        frame = pl.DataFrame(
            {
                "telemetry_id": telemetry_ids,
                "vehicle_id": self.vehicle_ids.gather(vehicle),
                "gateway_id": self.gateway_ids.gather(vehicle),
                "recorded_ms": samples.t_ms + self.origin_ms,
                "status": pl.Series(STATUS_NAMES).gather(
                    pl.Series(samples.status.astype(np.int64))
                ),
                "precipitation": pl.Series(PRECIPITATION).gather(
                    pl.Series(samples.columns["precipitation"].astype(np.int64))
                ),
                "road_condition": pl.Series(ROAD_CONDITIONS).gather(
                    pl.Series(samples.columns["road_condition"].astype(np.int64))
                ),
                **{f"dtc{c}": code.gather(vehicle) for c, code in enumerate(self.codes)},
                **{f"has_dtc{c}": samples.dtc[:, c] for c in range(len(COMPONENTS))},
                **cols,
            }
        )
        lines = np.empty(n, dtype=object)
        group = samples.profile.astype(np.int64) * 2 + samples.v2
        order = np.argsort(group, kind="stable")
        bounds = np.flatnonzero(np.diff(group[order])) + 1
        for chunk in np.split(order, bounds):
            if not len(chunk):
                continue
            profile, v2 = divmod(int(group[chunk[0]]), 2)
            ev = bool(self.ev[samples.vehicle[chunk[0]]])
            part = frame[chunk].select(self._expressions(profile, bool(v2), ev))
            buffer = io.BytesIO()
            part.write_ndjson(buffer)
            lines[chunk] = buffer.getvalue().split(b"\n")[:-1]
        return lines

    def _expressions(self, profile: int, v2: bool, ev: bool) -> list[pl.Expr]:
        sensors = SENSOR_PROFILES[profile]
        energy = pl.col("energy")
        none = pl.lit(None, dtype=pl.Float64)
        exprs = [
            pl.col("telemetry_id"),
            pl.col("vehicle_id"),
            pl.from_epoch("recorded_ms", "ms").dt.strftime(TIMESTAMP_FORMAT).alias("recorded_at"),
            pl.lit(SCHEMA_V2 if v2 else SCHEMA_V1).alias("schema_version"),
            pl.struct(pl.col("lat"), pl.col("lon")).alias("location"),
            pl.col("speed_kmh"),
            pl.col("heading").alias("heading_deg" if v2 else "heading_degrees"),
            (energy if ev else none).alias("battery_level_percent"),
            (none if ev else energy).alias("fuel_level_percent"),
            pl.struct([pl.col(k) for k in sensors]).alias("sensor_readings"),
            pl.concat_list(
                [
                    pl.when(pl.col(f"has_dtc{c}")).then(pl.col(f"dtc{c}"))
                    for c in range(len(COMPONENTS))
                ]
            )
            .list.drop_nulls()
            .alias("diagnostic_codes"),
            pl.struct(
                pl.col("ambient_temp_c"),
                pl.col("humidity_percent"),
                pl.col("precipitation"),
                pl.col("road_condition"),
            ).alias("environmental_conditions"),
            pl.col("status").alias("operational_status"),
        ]
        if v2:
            exprs += [pl.col("odometer_km"), pl.lit(FIRMWARE_V2).alias("firmware_version")]
        exprs.append(pl.struct(pl.col("gateway_id")).alias("custom_data"))
        return exprs
