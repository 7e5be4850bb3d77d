"""The simulated Fleet OS world: tenants, fleets, vehicles, routes, policies, users and weather."""

from __future__ import annotations

import base64
import hashlib
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from atlasmesh.simulator.catalog import (
    CITIES,
    COMPONENTS,
    FIRMWARE_V1,
    MODELS,
    SECTORS,
    City,
    Model,
    Sector,
)
from atlasmesh.simulator.config import SimConfig

EARTH_KM_PER_DEG = 111.32
# RNG streams: every random draw belongs to one, so changing one part of the simulator
# never shifts the numbers another part draws.
STREAM_WORLD, STREAM_VEHICLE, STREAM_SAMPLES, STREAM_FAULTS, STREAM_IDS, STREAM_WEATHER = range(6)
WEATHER_MARGIN_H = 24

PRECIPITATION = ("none", "rain", "snow")
ROAD_CONDITIONS = ("dry", "wet", "icy", "snow")
_ORG_STEMS = ("Atlas", "Falcon", "Nordic", "Saguaro", "Alpine", "Oasis", "Meridian", "Harbor")
_SECTOR_WORDS = {
    "logistics": "Logistics",
    "ride_hail": "Mobility",
    "mining": "Mining",
    "public_transit": "Transit",
    "municipal": "City Services",
}
_TIERS = ("basic", "professional", "enterprise")
_DATES_ANCHOR = datetime(2025, 1, 1, tzinfo=UTC)


def rng_for(seed: int, stream: int, *key: int) -> np.random.Generator:
    """The generator of one stream (and sub-key, e.g. a vehicle or a block) of a run."""
    return np.random.default_rng([seed, stream, *key])


def new_id(rng: np.random.Generator) -> str:
    """A random-looking UUID (version 4 layout) drawn from a seeded generator."""
    return format_uuid4(rng.bytes(16))


def format_uuid4(raw: bytes) -> str:
    """16 random bytes as a canonical version-4 UUID string (what uuid.UUID would print)."""
    h = raw.hex()
    variant = "89ab"[int(h[16], 16) & 3]
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:32]}"


def offset_km(lat: float, lon: float, east_km: float, north_km: float) -> tuple[float, float]:
    """The point `east_km`, `north_km` away (equirectangular: fine at city scale)."""
    dlat = north_km / EARTH_KM_PER_DEG
    dlon = east_km / (EARTH_KM_PER_DEG * math.cos(math.radians(lat)))
    return lat + dlat, lon + dlon


def haversine_km(
    lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray
) -> np.ndarray:
    """Great-circle distances in km."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(lon2 - lon1)
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * 6371.0088 * np.arcsin(np.sqrt(a))


def bearing_deg(
    lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray
) -> np.ndarray:
    """Initial bearing from point 1 to point 2, degrees clockwise from north in [0, 360)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dl = np.radians(lon2 - lon1)
    x = np.sin(dl) * np.cos(p2)
    y = np.cos(p1) * np.sin(p2) - np.sin(p1) * np.cos(p2) * np.cos(dl)
    return np.degrees(np.arctan2(x, y)) % 360.0


@dataclass
class Organization:
    """A tenant of the Fleet OS."""

    index: int
    organization_id: str
    name: str
    sector: Sector
    tier: str
    created_at: datetime
    fleets: list[int] = field(default_factory=list)


@dataclass
class Fleet:
    """A fleet of one organization, based at a depot in one city."""

    index: int
    fleet_id: str
    org: int
    city: int
    name: str
    depot: tuple[float, float]
    created_at: datetime
    routes: list[int] = field(default_factory=list)
    vehicles: list[int] = field(default_factory=list)


@dataclass
class Route:
    """An out-and-back route from a fleet's depot; trips run it forward or in reverse."""

    index: int
    route_id: str
    org: int
    fleet: int
    name: str
    lat: np.ndarray
    lon: np.ndarray
    cum_km: np.ndarray
    bearing: np.ndarray  # per leg, forward direction
    mean_speed_kmh: float
    stops_per_km: float
    roughness: float
    created_at: datetime

    @property
    def distance_km(self) -> float:
        """Length along the polyline."""
        return float(self.cum_km[-1])


@dataclass
class Vehicle:
    """One vehicle's static facts, including the hidden parameters of its wear."""

    index: int
    vehicle_id: str
    fleet: int
    org: int
    city: int
    model: Model
    asset_tag: str
    serial_number: str
    gateway: int
    phase_ms: int
    latency_ms: int
    firmware_switch_s: float  # seconds after start when it runs schema v2; inf: never
    odometer0_km: float
    energy0: float
    health0: np.ndarray  # per component, 1 new .. 0 failed
    wear_per_s: np.ndarray  # health lost per second of driving, per component
    dtc_lo: np.ndarray  # below: the component's DTC is always reported
    dtc_hi: np.ndarray  # above: never reported
    leaky_tire: int
    tire_offset_kpa: np.ndarray
    service_interval_s: float
    first_service_s: float
    created_at: datetime


@dataclass
class User:
    """A Fleet OS user of one organization."""

    user_id: str
    org: int
    username: str
    email: str
    role: str
    password_hash: str


@dataclass
class World:
    """Everything static about a run, built deterministically from its config."""

    config: SimConfig
    orgs: list[Organization]
    fleets: list[Fleet]
    vehicles: list[Vehicle]
    routes: list[Route]
    users: list[User]
    policies: dict[tuple[int, str], str]  # (org, policy name) -> policy_id
    gateways: list[str]
    ghost_vehicle_ids: list[str]
    weather_temp: np.ndarray  # [city, hour]
    weather_humidity: np.ndarray
    weather_precip: np.ndarray  # index into PRECIPITATION
    weather_road: np.ndarray  # index into ROAD_CONDITIONS
    route_lat: np.ndarray = field(init=False)
    route_lon: np.ndarray = field(init=False)
    route_cum: np.ndarray = field(init=False)
    route_bearing: np.ndarray = field(init=False)
    route_offset: np.ndarray = field(init=False)
    route_legs: np.ndarray = field(init=False)
    route_keys: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        # Routes concatenated so one searchsorted locates every sample on its polyline.
        self.route_offset = np.cumsum([0] + [len(r.lat) for r in self.routes])[:-1]
        self.route_legs = np.array([len(r.lat) - 1 for r in self.routes])
        self.route_lat = np.concatenate([r.lat for r in self.routes])
        self.route_lon = np.concatenate([r.lon for r in self.routes])
        self.route_cum = np.concatenate([r.cum_km for r in self.routes])
        self.route_bearing = np.concatenate(
            [np.append(r.bearing, r.bearing[-1]) for r in self.routes]
        )
        # Routes are far shorter than 1e6 km: route * 1e6 + km orders every polyline point.
        route_of_point = np.arange(len(self.routes), dtype=np.float64).repeat(self.route_legs + 1)
        self.route_keys = route_of_point * 1e6 + self.route_cum

    def users_of(self, org: int, role: str) -> list[User]:
        """Users of an organization with one role."""
        return [u for u in self.users if u.org == org and u.role == role]

    def hour_index(self, t_s: np.ndarray) -> np.ndarray:
        """Index into the weather arrays for seconds after start."""
        return np.floor_divide(t_s, 3600).astype(np.int64) + WEATHER_MARGIN_H

    def ambient(self, city: int, t_s: float) -> tuple[float, int]:
        """Ambient temperature and precipitation index in a city at one moment."""
        h = int(t_s // 3600) + WEATHER_MARGIN_H
        return float(self.weather_temp[city, h]), int(self.weather_precip[city, h])


def _slug(text: str) -> str:
    return "".join(ch for ch in text.lower().replace(" ", "-") if ch.isalnum() or ch == "-")


def _split(total: int, parts: int, rng: np.random.Generator) -> list[int]:
    """`total` items over `parts` groups, each at least one, sizes varying."""
    weights = rng.uniform(0.6, 1.6, parts)
    sizes = np.ones(parts, dtype=int)
    extra = total - parts
    if extra > 0:
        raw = weights / weights.sum() * extra
        sizes += np.floor(raw).astype(int)
        rest = extra - int(np.floor(raw).sum())
        for i in np.argsort(-(raw - np.floor(raw)), kind="stable")[:rest]:
            sizes[i] += 1
    return sizes.tolist()


def _route(
    index: int, fleet: Fleet, org: Organization, city: City, rng: np.random.Generator
) -> Route:
    sector = org.sector
    target = rng.uniform(*sector.route_km)
    heading = rng.uniform(0, 360)
    lat, lon = [fleet.depot[0]], [fleet.depot[1]]
    dest = offset_km(*fleet.depot, *_polar(target / 1.25, heading))
    travelled = 0.0
    while travelled < target * 1.6:
        to_dest = float(
            bearing_deg(np.array(lat[-1]), np.array(lon[-1]), np.array(dest[0]), np.array(dest[1]))
        )
        remaining = float(
            haversine_km(np.array(lat[-1]), np.array(lon[-1]), np.array(dest[0]), np.array(dest[1]))
        )
        step = rng.uniform(0.35, 1.2)
        if remaining <= step:
            lat.append(dest[0])
            lon.append(dest[1])
            break
        # A street grid wanders around the straight line to the destination.
        leg_heading = to_dest + rng.normal(0, 35)
        nlat, nlon = offset_km(lat[-1], lon[-1], *_polar(step, leg_heading))
        lat.append(nlat)
        lon.append(nlon)
        travelled += step
    else:
        lat.append(dest[0])
        lon.append(dest[1])
    lat_a, lon_a = np.round(np.array(lat), 6), np.round(np.array(lon), 6)
    legs = haversine_km(lat_a[:-1], lon_a[:-1], lat_a[1:], lon_a[1:])
    cum = np.concatenate([[0.0], np.cumsum(legs)])
    return Route(
        index=index,
        route_id=new_id(rng),
        org=org.index,
        fleet=fleet.index,
        name=f"{city.name[:3].upper()}-{_SECTOR_WORDS[sector.name][:3].upper()}-R{index + 1:03d}",
        lat=lat_a,
        lon=lon_a,
        cum_km=cum,
        bearing=bearing_deg(lat_a[:-1], lon_a[:-1], lat_a[1:], lon_a[1:]),
        mean_speed_kmh=float(rng.uniform(*sector.mean_speed_kmh)),
        stops_per_km=sector.stops_per_km * float(rng.uniform(0.7, 1.3)),
        roughness=sector.road_roughness * float(rng.uniform(0.85, 1.15)),
        created_at=fleet.created_at + timedelta(days=float(rng.uniform(1, 20))),
    )


def _polar(distance_km: float, heading_deg: float) -> tuple[float, float]:
    rad = math.radians(heading_deg)
    return distance_km * math.sin(rad), distance_km * math.cos(rad)


def _weather(config: SimConfig) -> tuple[np.ndarray, ...]:
    hours = math.ceil(config.end_s / 3600) + 2 * WEATHER_MARGIN_H + 24
    n_city = len(CITIES)
    temp = np.empty((n_city, hours))
    hum = np.empty((n_city, hours))
    precip = np.zeros((n_city, hours), dtype=np.int8)
    road = np.zeros((n_city, hours), dtype=np.int8)
    start_h = config.origin.timestamp() / 3600 - WEATHER_MARGIN_H
    for c, city in enumerate(CITIES):
        # One stream per quantity: an hour's weather must not depend on how many hours
        # the run covers (windows of one history share it).
        rng, rain_rng, humidity_rng = (rng_for(config.seed, STREAM_WEATHER, c, q) for q in range(3))
        abs_h = start_h + np.arange(hours)
        doy = (abs_h / 24) % 365.25
        local_h = (abs_h + city.utc_offset_h) % 24
        # Weather anomalies persist for days: an AR(1) process on hourly steps.
        anomaly = np.empty(hours)
        a = rng.normal(0, 2.5)
        for h in range(hours):
            a = 0.985 * a + rng.normal(0, 0.45)
            anomaly[h] = a
        temp[c] = (
            city.mean_temp_c
            + city.annual_amp_c * np.cos(2 * np.pi * (doy - 200) / 365.25)
            + city.diurnal_amp_c * np.cos(2 * np.pi * (local_h - 15) / 24)
            + anomaly
        )
        wet = np.zeros(hours, dtype=bool)
        state = False
        p_start = city.wet_hours / 6  # showers last about six hours
        for h in range(hours):
            state = rain_rng.random() < (5 / 6 if state else p_start)
            wet[h] = state
        precip[c] = np.where(wet, np.where(temp[c] < 0.5, 2, 1), 0)
        recently_wet = wet | np.roll(wet, 1) | np.roll(wet, 2)
        road[c] = np.select(
            [precip[c] == 2, recently_wet & (temp[c] < 0), recently_wet], [3, 2, 1], default=0
        )
        hum[c] = np.clip(
            city.humidity
            - 1.2 * city.diurnal_amp_c * np.cos(2 * np.pi * (local_h - 15) / 24)
            + 25 * wet
            + humidity_rng.normal(0, 4, hours),
            5,
            100,
        )
    return temp, hum, precip, road


def build_world(config: SimConfig) -> World:
    """The organizations, fleets, vehicles, routes, users and weather of a run."""
    rng = rng_for(config.seed, STREAM_WORLD)
    # Entity creation dates do not move with the window, so every slice of a history
    # writes the same organizations, fleets and vehicles.
    base = min(config.origin, _DATES_ANCHOR) - timedelta(days=400)
    n_org = config.n_organizations
    sector_order = rng.permutation(len(SECTORS))
    city_order = rng.permutation(len(CITIES))
    org_sizes = _split(config.vehicles, n_org, rng)
    orgs: list[Organization] = []
    fleets: list[Fleet] = []
    vehicles: list[Vehicle] = []
    routes: list[Route] = []
    users: list[User] = []
    policies: dict[tuple[int, str], str] = {}
    for o in range(n_org):
        sector = SECTORS[int(sector_order[o % len(SECTORS)])]
        stem = _ORG_STEMS[o % len(_ORG_STEMS)]
        suffix = "" if o < len(_ORG_STEMS) else f" {o // len(_ORG_STEMS) + 1}"
        org = Organization(
            index=o,
            organization_id=new_id(rng),
            name=f"{stem} {_SECTOR_WORDS[sector.name]}{suffix}",
            sector=sector,
            tier=_TIERS[int(rng.integers(len(_TIERS)))],
            created_at=base + timedelta(days=float(rng.uniform(0, 30))),
        )
        orgs.append(org)
        n_fleets = min(org_sizes[o], 1 + (org_sizes[o] >= 12) + (org_sizes[o] >= 40))
        for size in _split(org_sizes[o], n_fleets, rng):
            city_index = int(city_order[(o + len(org.fleets)) % len(CITIES)])
            city = CITIES[city_index]
            depot = offset_km(city.lat, city.lon, *_polar(rng.uniform(1, 9), rng.uniform(0, 360)))
            fleet = Fleet(
                index=len(fleets),
                fleet_id=new_id(rng),
                org=o,
                city=city_index,
                name=f"{org.name.split()[0]} {city.name} {len(org.fleets) + 1}",
                depot=(round(depot[0], 6), round(depot[1], 6)),
                created_at=org.created_at + timedelta(days=float(rng.uniform(1, 30))),
            )
            fleets.append(fleet)
            org.fleets.append(fleet.index)
            for _ in range(int(np.clip(2 + size // 3, 2, 12))):
                route = _route(len(routes), fleet, org, city, rng)
                routes.append(route)
                fleet.routes.append(route.index)
            for _ in range(size):
                fleet.vehicles.append(len(vehicles))
                vehicles.append(_vehicle(len(vehicles), fleet, org, config, rng))
        for name in ("trip_dispatch", "energy_reserve", "operating_hours", "maintenance_lockout"):
            policies[(o, name)] = new_id(rng)
        for role, count in (("admin", 1), ("dispatcher", 2), ("technician", 2)):
            for n in range(count):
                users.append(_user(org, role, n, rng))
    gateways = _assign_gateways(config, fleets, vehicles, rng)
    ghosts = [new_id(rng) for _ in range(5)]
    _assign_firmware(config, vehicles, rng)
    temp, hum, precip, road = _weather(config)
    return World(
        config=config,
        orgs=orgs,
        fleets=fleets,
        vehicles=vehicles,
        routes=routes,
        users=users,
        policies=policies,
        gateways=gateways,
        ghost_vehicle_ids=ghosts,
        weather_temp=temp,
        weather_humidity=hum,
        weather_precip=precip,
        weather_road=road,
    )


def _vehicle(
    index: int, fleet: Fleet, org: Organization, config: SimConfig, rng: np.random.Generator
) -> Vehicle:
    model_index = int(org.sector.models[int(rng.integers(len(org.sector.models)))])
    model = MODELS[model_index]
    n_comp = len(COMPONENTS)
    days = np.array([c.days_to_failure for c in COMPONENTS])
    # Eight hours of driving is a typical day; vehicles differ (duty, driver, build quality).
    wear = config.wear_factor / (days * 8 * 3600) * rng.lognormal(0.0, 0.35, n_comp)
    dtc_lo = rng.uniform(0.06, 0.14, n_comp)
    interval_ms = config.interval_ms
    service_days = float(rng.uniform(35, 50))
    return Vehicle(
        index=index,
        vehicle_id=new_id(rng),
        fleet=fleet.index,
        org=org.index,
        city=fleet.city,
        model=model,
        asset_tag=f"AM-{index + 1:05d}-{rng.integers(16**4):04X}",
        serial_number=f"{model.manufacturer[:2].upper()}{rng.integers(10**9):09d}{index:05d}",
        gateway=-1,
        phase_ms=int(rng.integers(0, min(interval_ms, 1000))),
        latency_ms=int(rng.integers(150, 2500)),
        firmware_switch_s=math.inf,
        odometer0_km=float(rng.uniform(2_000, 120_000)),
        energy0=float(rng.uniform(55, 95)),
        health0=rng.uniform(0.35, 1.0, n_comp),
        wear_per_s=wear,
        dtc_lo=dtc_lo,
        dtc_hi=dtc_lo + rng.uniform(0.12, 0.2, n_comp),
        leaky_tire=int(rng.integers(4)),
        tire_offset_kpa=rng.normal(0, 4, 4),
        service_interval_s=service_days * 86400,
        first_service_s=float(rng.uniform(0.05, 1.0)) * service_days * 86400,
        created_at=fleet.created_at + timedelta(days=float(rng.uniform(1, 60))),
    )


def _user(org: Organization, role: str, n: int, rng: np.random.Generator) -> User:
    # The id suffix keeps usernames unique when runs of other seeds share the database.
    slug = _slug(org.name).replace("-", "") + "-" + org.organization_id[:4]
    username = f"{slug}.{role}{n + 1}"
    salt = rng.bytes(12)
    # A low iteration count keeps world building fast; the hash is never used to log in.
    digest = hashlib.pbkdf2_hmac("sha256", rng.bytes(16), salt, 1000)
    return User(
        user_id=new_id(rng),
        org=org.index,
        username=username,
        email=f"{role}{n + 1}@{slug}.example",
        role=role,
        password_hash="pbkdf2_sha256$1000$"
        + base64.b64encode(salt).decode()
        + "$"
        + base64.b64encode(digest).decode(),
    )


def _assign_gateways(
    config: SimConfig, fleets: list[Fleet], vehicles: list[Vehicle], rng: np.random.Generator
) -> list[str]:
    """Regional gateways: vehicles of a city share ceil(n / vehicles_per_gateway) of them."""
    gateways: list[str] = []
    for c, city in enumerate(CITIES):
        members = [v for v in vehicles if v.city == c]
        if not members:
            continue
        n = math.ceil(len(members) / config.vehicles_per_gateway)
        first = len(gateways)
        for k in range(n):
            gateways.append(f"gw-{_slug(city.name)}-{k + 1:02d}-{rng.bytes(3).hex()}")
        for i, vehicle in enumerate(members):
            vehicle.gateway = first + i % n
    return gateways


def _assign_firmware(config: SimConfig, vehicles: list[Vehicle], rng: np.random.Generator) -> None:
    """A share of the vehicles gets the v2 firmware over the air within hours of the rollout."""
    n = round(config.firmware_update_share * len(vehicles))
    chosen = rng.permutation(len(vehicles))[:n]
    at = (config.firmware_update_time - config.origin).total_seconds()
    for v in sorted(chosen.tolist()):
        vehicles[v].firmware_switch_s = at + float(rng.uniform(0, 4 * 3600))


def vehicle_profile(model: Model) -> dict[str, object]:
    """The fleet-core `vehicle_profile` JSON of a model."""
    ev = model.powertrain == "ev"
    return {
        "powertrain": model.powertrain,
        "battery_kwh": model.capacity if ev else None,
        "tank_l": None if ev else model.capacity,
        "nominal_consumption": model.consumption,
        "consumption_unit": model.consumption_unit,
        "max_load_kg": model.max_load_kg,
        "firmware_version": FIRMWARE_V1,
    }
