"""Telemetry samples read off the planned timelines, vectorised over vehicles and time steps."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from atlasmesh.simulator import health
from atlasmesh.simulator.catalog import COMPONENTS, TIRE_KEYS, Kind
from atlasmesh.simulator.kinematics import distance_at, locate, speed_at
from atlasmesh.simulator.ops import (
    N_COMP,
    SEG_AMP,
    SEG_DIR,
    SEG_DIST,
    SEG_DUR,
    SEG_E0,
    SEG_ERATE,
    SEG_H0,
    SEG_HEADING,
    SEG_HR,
    SEG_KIND,
    SEG_LAT,
    SEG_LOAD,
    SEG_LON,
    SEG_OD0,
    SEG_ROUGH,
    SEG_ROUTE,
    SEG_STOPS,
    SEG_T0,
)
from atlasmesh.simulator.world import EARTH_KM_PER_DEG, World

# Vehicle index in the high bits, milliseconds in the low 38 (3,181 days) of one int64 key.
_KEY_SHIFT = 38
COMPONENT_INDEX = {c.name: i for i, c in enumerate(COMPONENTS)}
BRAKES, TIRES, COOLING, AUX, BEARING = (
    COMPONENT_INDEX[n] for n in ("brakes", "tires", "cooling", "aux_battery", "drive_bearing")
)


@dataclass(frozen=True)
class VehicleArrays:
    """Per-vehicle constants as arrays, for gathering by sample."""

    ev: np.ndarray
    profile: np.ndarray
    capacity: np.ndarray
    consumption: np.ndarray
    max_load: np.ndarray
    tire_kpa: np.ndarray
    city: np.ndarray
    phase_ms: np.ndarray
    firmware_switch_ms: np.ndarray
    dtc_lo: np.ndarray
    dtc_hi: np.ndarray
    leaky_tire: np.ndarray
    tire_offset: np.ndarray

    @classmethod
    def of(cls, world: World) -> VehicleArrays:
        """Gather the constants of all vehicles of a world."""
        vs = world.vehicles
        switch = np.array([v.firmware_switch_s for v in vs]) * 1000
        return cls(
            ev=np.array([v.model.powertrain == "ev" for v in vs]),
            profile=np.array([v.model.profile_index for v in vs], dtype=np.int8),
            capacity=np.array([v.model.capacity for v in vs]),
            consumption=np.array([v.model.consumption for v in vs]),
            max_load=np.array([v.model.max_load_kg for v in vs]),
            tire_kpa=np.array([v.model.tire_kpa for v in vs]),
            city=np.array([v.city for v in vs], dtype=np.int64),
            phase_ms=np.array([v.phase_ms for v in vs], dtype=np.int64),
            firmware_switch_ms=np.where(
                np.isfinite(switch), switch, np.iinfo(np.int64).max / 2
            ).astype(np.int64),
            dtc_lo=np.array([v.dtc_lo for v in vs]),
            dtc_hi=np.array([v.dtc_hi for v in vs]),
            leaky_tire=np.array([v.leaky_tire for v in vs], dtype=np.int64),
            tire_offset=np.array([v.tire_offset_kpa for v in vs]),
        )


def locate_segments(
    seg: np.ndarray, owner: np.ndarray, vehicle: np.ndarray, t_ms: np.ndarray
) -> np.ndarray:
    """Index of the segment each (vehicle, time) falls in; segments sorted by vehicle, start."""
    seg_keys = (owner << _KEY_SHIFT) + np.floor(seg[:, SEG_T0] * 1000).astype(np.int64)
    keys = (vehicle.astype(np.int64) << _KEY_SHIFT) + t_ms
    return np.maximum(np.searchsorted(seg_keys, keys, side="right") - 1, 0)


def health_at(seg: np.ndarray, idx: np.ndarray, t_s: np.ndarray) -> np.ndarray:
    """True component health [sample, component] at each sample."""
    tau = (t_s - seg[idx, SEG_T0])[:, None]
    return np.clip(
        seg[idx, SEG_H0 : SEG_H0 + N_COMP] - seg[idx, SEG_HR : SEG_HR + N_COMP] * tau, 0.0, 1.0
    )


@dataclass
class Samples:
    """One block of telemetry samples (time-major: all vehicles at step k, then k + 1)."""

    vehicle: np.ndarray
    t_ms: np.ndarray  # true time of measurement, ms after the origin
    v2: np.ndarray
    profile: np.ndarray
    columns: dict[str, np.ndarray]
    dtc: np.ndarray  # [sample, component] bool: the component's DTC is reported
    status: np.ndarray  # Kind codes


def sample_block(
    world: World,
    consts: VehicleArrays,
    seg: np.ndarray,
    owner: np.ndarray,
    k0: int,
    k1: int,
    rng: np.random.Generator,
) -> Samples:
    """Telemetry of every vehicle at steps k0..k1-1."""
    n_veh = len(world.vehicles)
    steps = np.arange(k0, k1, dtype=np.int64)
    vehicle = np.tile(np.arange(n_veh, dtype=np.int64), len(steps))
    t_ms = np.repeat(steps * world.config.interval_ms, n_veh) + consts.phase_ms[vehicle]
    t_s = t_ms / 1000.0
    n = len(vehicle)
    idx = locate_segments(seg, owner, vehicle, t_ms)
    s = seg[idx]
    kind = s[:, SEG_KIND].astype(np.int8)
    tau = t_s - s[:, SEG_T0]
    driving = kind == Kind.DRIVING

    lat = s[:, SEG_LAT].copy()
    lon = s[:, SEG_LON].copy()
    heading = s[:, SEG_HEADING].copy()
    speed = np.zeros(n)
    travelled = np.zeros(n)
    if driving.any():
        d = s[driving]
        x = np.clip(tau[driving] / d[:, SEG_DUR], 0.0, 1.0)
        dist = distance_at(x, d[:, SEG_DIST], d[:, SEG_STOPS], d[:, SEG_AMP])
        forward = d[:, SEG_DIR] > 0
        along = np.where(forward, dist, d[:, SEG_DIST] - dist)
        dlat, dlon, bearing = locate(world, d[:, SEG_ROUTE].astype(np.int64), along)
        lat[driving], lon[driving] = dlat, dlon
        heading[driving] = np.where(forward, bearing, (bearing + 180.0) % 360.0)
        speed[driving] = speed_at(x, d[:, SEG_DIST], d[:, SEG_DUR], d[:, SEG_STOPS], d[:, SEG_AMP])
        travelled[driving] = dist
    # GNSS jitter of a few metres; compass jitter larger when moving.
    noise = rng.standard_normal((5, n))
    lat += noise[0] * 0.003 / EARTH_KM_PER_DEG
    lon += noise[1] * 0.003 / (EARTH_KM_PER_DEG * np.cos(np.radians(lat)))
    heading = (heading + noise[2] * np.where(driving, 1.5, 0.3)) % 360.0
    speed = np.where(driving, np.maximum(speed + noise[3] * 0.6, 0.0), 0.0)

    erate = s[:, SEG_ERATE]
    energy = np.clip(
        np.where(driving, s[:, SEG_E0] - erate * travelled, s[:, SEG_E0] + erate * tau), 0.0, 100.0
    )
    odometer = s[:, SEG_OD0] + travelled
    ev = consts.ev[vehicle]
    h = health_at(seg, idx, t_s)
    wear = 1.0 - h

    city = consts.city[vehicle]
    hour = world.hour_index(t_s)
    frac = (t_s % 3600) / 3600
    temp_now, temp_next = world.weather_temp[city, hour], world.weather_temp[city, hour + 1]
    ambient = temp_now + frac * (temp_next - temp_now)
    humidity = world.weather_humidity[city, hour]
    load = s[:, SEG_LOAD]
    load_frac = load / consts.max_load[vehicle]
    # How hard the drive unit works: full when driving, partly when idling or charging.
    activity = np.select([driving, kind == Kind.IDLE, kind == Kind.CHARGING], [1.0, 0.5, 0.5], 0.1)
    engine_on = driving | (kind == Kind.IDLE)
    cooling_excess = wear[:, COOLING] ** 2 * activity

    cols: dict[str, np.ndarray] = {}
    cooldown = np.exp(-tau / 1800.0)
    motor = np.select(
        [driving, kind == Kind.IDLE, kind == Kind.CHARGING, kind == Kind.PARKED],
        [
            ambient + 22 + 0.25 * speed + 8 * load_frac,
            ambient + 6,
            ambient + 9,
            ambient + 15 * cooldown,
        ],
        ambient + 2,
    )
    noise = rng.standard_normal((8, n))
    cols["motor_temp_c"] = motor + 38 * cooling_excess + noise[0] * 0.8
    battery_heat = np.select(
        [driving, kind == Kind.CHARGING, kind == Kind.IDLE], [3 + 0.05 * speed, 9.0, 1.0], 0.0
    )
    cols["battery_temp_c"] = (
        0.4 * ambient + 14 + battery_heat + 10 * cooling_excess + noise[1] * 0.4
    )
    engine = np.where(
        engine_on,
        86 + np.where(driving, 0.08 * speed + 4 * load_frac, 0.0),
        ambient
        + np.maximum(85 - ambient, 0)
        * np.exp(-tau / np.where(kind == Kind.REFUELING, 1500.0, 1800.0)),
    )
    cols["engine_temp_c"] = (
        engine + 35 * cooling_excess * np.where(engine_on, 1.0, 0.2) + noise[2] * 0.7
    )
    cols["coolant_temp_c"] = cols["engine_temp_c"] - 4 + noise[3] * 0.5

    tire_temp = ambient + np.where(driving, 0.25 * speed, 8 * cooldown * (kind == Kind.PARKED))
    nominal = consts.tire_kpa[vehicle] * (1 + 0.003 * (tire_temp - 20))
    leak = 1 - 0.3 * wear[:, TIRES] ** 1.5
    tire_noise = rng.standard_normal((4, n))
    for i, key in enumerate(TIRE_KEYS):
        factor = np.where(consts.leaky_tire[vehicle] == i, leak, 1.0)
        cols[key] = nominal * factor + consts.tire_offset[vehicle, i] + tire_noise[i] * 1.2

    rough = s[:, SEG_ROUGH]
    grinding = np.clip((0.15 - h[:, BRAKES]) / 0.15, 0, 1) * 0.15
    vib = np.select(
        [driving, kind == Kind.IDLE],
        [
            0.04
            + 0.0025 * speed * rough
            + 0.55 * wear[:, BEARING] ** 2 * (0.3 + speed / 60)
            + grinding,
            np.where(ev, 0.01, 0.06) + 0.1 * wear[:, BEARING] ** 2,
        ],
        0.003,
    )
    cols["vibration_rms_g"] = vib * np.exp(noise[4] * 0.12)
    cols["brake_pad_mm"] = 2.0 + 10.0 * h[:, BRAKES] + noise[5] * 0.08
    charging_system = engine_on | (ev & (kind == Kind.CHARGING))
    cols["aux_battery_v"] = (
        np.where(
            charging_system,
            13.9 - 0.9 * wear[:, AUX] ** 2,
            12.65 - 1.3 * wear[:, AUX] ** 1.5 - 0.008 * np.maximum(-ambient, 0),
        )
        + noise[6] * 0.03
    )
    cols["load_kg"] = np.maximum(load * (1 + noise[7] * 0.01), 0.0)
    climate = np.where(
        ev,
        1 + 0.012 * np.maximum(18 - ambient, 0) + 0.006 * np.maximum(ambient - 28, 0),
        1 + 0.004 * np.maximum(10 - ambient, 0) + 0.003 * np.maximum(ambient - 30, 0),
    )
    instantaneous = (
        consts.consumption[vehicle]
        * climate
        * (1 + 0.25 * load_frac)
        * (1 + 0.35 * ((speed - 55) / 60) ** 2)
        * np.exp(rng.standard_normal(n) * 0.08)
    )
    cols["energy_rate"] = np.where(driving & (speed > 1.0), instantaneous, 0.0)

    cols["lat"], cols["lon"], cols["speed_kmh"], cols["heading"] = lat, lon, speed, heading
    cols["energy"] = energy
    cols["odometer_km"] = odometer
    cols["ambient_temp_c"] = ambient
    cols["humidity_percent"] = humidity
    cols["precipitation"] = world.weather_precip[city, hour]
    cols["road_condition"] = world.weather_road[city, hour]

    p = health.dtc_probability(h, consts.dtc_lo[vehicle], consts.dtc_hi[vehicle])
    dtc = rng.random((n, N_COMP)) < p
    return Samples(
        vehicle=vehicle,
        t_ms=t_ms,
        v2=t_ms >= consts.firmware_switch_ms[vehicle],
        profile=consts.profile[vehicle],
        columns=cols,
        dtc=dtc,
        status=kind,
    )
