"""The static world and motion: deterministic ids, realistic places, plausible kinematics."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import numpy as np
import pytest

from atlasmesh.simulator.catalog import CITIES
from atlasmesh.simulator.config import SimConfig
from atlasmesh.simulator.kinematics import distance_at, locate, speed_at, trip_shape
from atlasmesh.simulator.world import build_world, format_uuid4, haversine_km

START = datetime(2026, 10, 1, tzinfo=UTC)


def _world(seed: int = 1, vehicles: int = 36):
    return build_world(SimConfig(seed=seed, vehicles=vehicles, days=2, start=START))


def test_same_seed_same_world_other_seed_other_ids() -> None:
    a, b, c = _world(1), _world(1), _world(2)
    assert [v.vehicle_id for v in a.vehicles] == [v.vehicle_id for v in b.vehicles]
    assert [r.lat.tolist() for r in a.routes] == [r.lat.tolist() for r in b.routes]
    assert not {v.vehicle_id for v in a.vehicles} & {v.vehicle_id for v in c.vehicles}
    assert not {u.username for u in a.users} & {u.username for u in c.users}


def test_tenants_fleets_and_places_are_realistic() -> None:
    world = _world()
    assert len(world.orgs) >= 3 and len({o.sector.name for o in world.orgs}) >= 3
    assert all(world.fleets[v.fleet].org == v.org for v in world.vehicles)
    assert {v.model.powertrain for v in world.vehicles} == {"ev", "ice"}
    for route in world.routes:
        fleet = world.fleets[route.fleet]
        city = CITIES[fleet.city]
        assert (route.lat[0], route.lon[0]) == fleet.depot
        assert (
            haversine_km(
                route.lat,
                route.lon,
                np.full_like(route.lat, city.lat),
                np.full_like(route.lon, city.lon),
            ).max()
            < 80
        )
        assert route.distance_km > 1
    assert all(0 <= v.gateway < len(world.gateways) for v in world.vehicles)
    switched = [v for v in world.vehicles if np.isfinite(v.firmware_switch_s)]
    assert 0 < len(switched) < len(world.vehicles)


def test_ids_are_canonical_uuid4() -> None:
    raw = bytes(range(16))
    assert format_uuid4(raw) == str(uuid.UUID(bytes=raw, version=4))


def test_speed_profile_starts_and_ends_at_rest_with_the_right_mean() -> None:
    distance, duration = 12.0, 1500.0
    stops, amp = trip_shape(1.0, distance)
    x = np.linspace(0, 1, 20_001)
    d = distance_at(x, distance, stops, amp)
    v = speed_at(x, distance, duration, stops, amp)
    assert d[0] == 0 and d[-1] == pytest.approx(distance)
    assert np.all(np.diff(d) >= -1e-12) and np.all(v >= -1e-9)
    assert v[0] == pytest.approx(0, abs=1e-9) and v[-1] == pytest.approx(0, abs=1e-9)
    assert v.mean() == pytest.approx(distance / duration * 3600, rel=1e-3)


def test_positions_follow_the_polyline() -> None:
    world = _world()
    route = world.routes[3]
    ends = locate(world, np.array([3, 3]), np.array([0.0, route.distance_km]))
    assert ends[0][0] == pytest.approx(route.lat[0]) and ends[1][1] == pytest.approx(route.lon[-1])
    halfway = locate(world, np.array([3]), np.array([route.cum_km[1] / 2]))
    assert halfway[0][0] == pytest.approx((route.lat[0] + route.lat[1]) / 2)
    assert halfway[2][0] == pytest.approx(route.bearing[0])
