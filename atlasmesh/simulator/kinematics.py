"""Plausible motion along a route: distance and speed over a trip, position on a polyline."""

from __future__ import annotations

import numpy as np

from atlasmesh.simulator.world import World

TWO_PI = 2 * np.pi


def trip_shape(stops_per_km: float, distance_km: float) -> tuple[float, float]:
    """Stop count and stop-and-go amplitude of a trip (urban routes stop often and deeply)."""
    stops = max(1.0, round(distance_km * stops_per_km))
    amplitude = float(np.clip(0.55 + 0.3 * min(1.0, stops_per_km), 0.3, 0.92))
    return stops, amplitude


def distance_at(
    x: np.ndarray, distance_km: np.ndarray, stops: np.ndarray, amp: np.ndarray
) -> np.ndarray:
    """Distance covered at trip fraction x in [0, 1].

    Speed is mean * (1 - a cos(2 pi k x) - (1 - a) cos(2 pi x)): zero at departure, at
    arrival and (nearly) at each of the k stops, never negative, with the right mean.
    """
    return distance_km * (
        x
        - amp / (TWO_PI * stops) * np.sin(TWO_PI * stops * x)
        - (1 - amp) / TWO_PI * np.sin(TWO_PI * x)
    )


def speed_at(
    x: np.ndarray,
    distance_km: np.ndarray,
    duration_s: np.ndarray,
    stops: np.ndarray,
    amp: np.ndarray,
) -> np.ndarray:
    """Speed in km/h at trip fraction x (the derivative of `distance_at`)."""
    mean_kmh = distance_km / np.maximum(duration_s, 1e-9) * 3600.0
    return mean_kmh * (1 - amp * np.cos(TWO_PI * stops * x) - (1 - amp) * np.cos(TWO_PI * x))


def locate(
    world: World, route: np.ndarray, along_km: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Latitude, longitude and forward leg bearing at `along_km` on each route's polyline."""
    route = np.asarray(route, dtype=np.int64)
    along = np.asarray(along_km, dtype=np.float64)
    offset = world.route_offset[route]
    legs = world.route_legs[route]
    idx = np.searchsorted(world.route_keys, route * 1e6 + along, side="right") - 1
    idx = np.clip(idx, offset, offset + legs - 1)
    c0, c1 = world.route_cum[idx], world.route_cum[idx + 1]
    frac = np.clip((along - c0) / np.maximum(c1 - c0, 1e-12), 0.0, 1.0)
    lat = world.route_lat[idx] + frac * (world.route_lat[idx + 1] - world.route_lat[idx])
    lon = world.route_lon[idx] + frac * (world.route_lon[idx + 1] - world.route_lon[idx])
    return lat, lon, world.route_bearing[idx]
