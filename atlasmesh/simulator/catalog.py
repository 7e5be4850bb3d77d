"""Static facts the simulator draws from: vehicle models, components, cities and sectors."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class Kind(IntEnum):
    """What a vehicle is doing during a segment of its timeline (its operational status)."""

    DRIVING = 0
    IDLE = 1
    CHARGING = 2
    REFUELING = 3
    PARKED = 4
    MAINTENANCE = 5
    FAULT = 6


STATUS_NAMES: tuple[str, ...] = tuple(k.name.lower() for k in Kind)

EV_SENSORS: tuple[str, ...] = (
    "motor_temp_c",
    "battery_temp_c",
    "tire_pressure_fl_kpa",
    "tire_pressure_fr_kpa",
    "tire_pressure_rl_kpa",
    "tire_pressure_rr_kpa",
    "vibration_rms_g",
    "brake_pad_mm",
    "aux_battery_v",
    "load_kg",
    "energy_rate",
)
ICE_SENSORS: tuple[str, ...] = (
    "engine_temp_c",
    "coolant_temp_c",
    "tire_pressure_fl_kpa",
    "tire_pressure_fr_kpa",
    "tire_pressure_rl_kpa",
    "tire_pressure_rr_kpa",
    "vibration_rms_g",
    "brake_pad_mm",
    "aux_battery_v",
    "load_kg",
    "energy_rate",
)
# Older diesel units without TPMS or pad-wear sensors: their tyre and brake wear shows only
# through DTCs and vibration, as on real mixed fleets.
ICE_BASIC_SENSORS: tuple[str, ...] = (
    "engine_temp_c",
    "coolant_temp_c",
    "vibration_rms_g",
    "aux_battery_v",
    "load_kg",
    "energy_rate",
)
SENSOR_PROFILES: tuple[tuple[str, ...], ...] = (EV_SENSORS, ICE_SENSORS, ICE_BASIC_SENSORS)
TIRE_KEYS: tuple[str, ...] = EV_SENSORS[2:6]


@dataclass(frozen=True)
class Part:
    """A replaceable part and its list price."""

    number: str
    name: str
    unit_cost: float
    quantity: int = 1


@dataclass(frozen=True)
class Component:
    """A wearing component: how fast it degrades, what it shows before failing, what fixing costs.

    `days_to_failure` is the median life from new at a typical duty cycle (about eight hours
    of driving a day); `usage` scales wear per operational status (driving is 1).
    """

    name: str
    days_to_failure: float
    usage: tuple[float, ...]
    dtc_ev: str
    dtc_ice: str
    dtc_description: str
    critical: bool
    repair_hours: tuple[float, float]
    labor_hours: float
    parts: tuple[Part, ...]


# Wear per status, in Kind order: driving, idle, charging, refueling, parked, maintenance, fault.
COMPONENTS: tuple[Component, ...] = (
    Component(
        "brakes", 95.0, (1.0, 0.05, 0.0, 0.0, 0.0, 0.0, 0.0),
        "C1513", "C1513", "brake pad wear limit", True, (3.0, 8.0), 2.5,
        (Part("BRK-PAD-AX", "brake pad set (axle)", 145.0, 2), Part("BRK-DSC-01", "brake disc", 210.0, 2)),
    ),
    Component(
        "tires", 110.0, (1.0, 0.0, 0.0, 0.0, 0.04, 0.0, 0.0),
        "C0750", "C0750", "tyre pressure below threshold", False, (1.0, 3.0), 1.0,
        (Part("TIR-ALL-SEASON", "tyre", 240.0, 1), Part("TPMS-SNS-433", "TPMS valve sensor", 65.0, 1)),
    ),
    Component(
        "cooling", 120.0, (1.0, 0.35, 0.4, 0.0, 0.02, 0.0, 0.0),
        "P0A93", "P0217", "drive unit over-temperature", True, (8.0, 30.0), 6.0,
        (Part("CLT-PMP-12V", "coolant pump", 420.0, 1), Part("CLT-FLUID-5L", "coolant 5 L", 38.0, 2)),
    ),
    Component(
        "aux_battery", 140.0, (0.4, 0.5, 0.2, 0.4, 0.3, 0.0, 0.0),
        "P0562", "P0562", "12 V system voltage low", False, (1.0, 2.5), 0.8,
        (Part("BAT-12V-AGM70", "12 V AGM battery 70 Ah", 230.0, 1),),
    ),
    Component(
        "drive_bearing", 150.0, (1.0, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0),
        "P0A1B", "P0300", "drive-line vibration fault", True, (12.0, 48.0), 9.0,
        (Part("BRG-WHL-HUB", "wheel hub bearing", 310.0, 1), Part("SEAL-KIT-DL", "drive-line seal kit", 55.0, 1)),
    ),
)  # fmt: skip
COMPONENT_NAMES: tuple[str, ...] = tuple(c.name for c in COMPONENTS)
LABOR_RATE = 95.0  # per hour, workshop rate


@dataclass(frozen=True)
class Model:
    """A vehicle model: powertrain, energy store, nominal consumption and equipment."""

    manufacturer: str
    model: str
    powertrain: str  # "ev" | "ice"
    capacity: float  # kWh of traction battery, or litres of tank
    consumption: float  # kWh/100 km or L/100 km at a typical duty cycle
    max_load_kg: float
    charge_kw: float  # depot charging power (EV) or pump litres per minute (ICE)
    tire_kpa: float
    max_speed_kmh: float
    autonomy_level: int
    sensors: tuple[str, ...]

    @property
    def consumption_unit(self) -> str:
        """Unit of `consumption` and of the `energy_rate` sensor."""
        return "kWh/100km" if self.powertrain == "ev" else "L/100km"

    @property
    def profile_index(self) -> int:
        """Index of its sensor set in SENSOR_PROFILES."""
        return SENSOR_PROFILES.index(self.sensors)


MODELS: tuple[Model, ...] = (
    Model("Ford", "E-Transit 390", "ev", 68.0, 30.0, 1300, 11.3, 360, 130, 2, EV_SENSORS),
    Model("Mercedes-Benz", "eSprinter", "ev", 113.0, 27.0, 1400, 11.0, 380, 120, 2, EV_SENSORS),
    Model("BYD", "e6", "ev", 71.7, 17.5, 450, 40.0, 250, 130, 4, EV_SENSORS),
    Model("Tesla", "Model Y", "ev", 75.0, 16.5, 450, 48.0, 290, 180, 2, EV_SENSORS),
    Model("Volvo", "FL Electric", "ev", 395.0, 110.0, 9000, 43.0, 800, 90, 1, EV_SENSORS),
    Model("BYD", "K9 electric bus", "ev", 324.0, 120.0, 6500, 80.0, 850, 70, 1, EV_SENSORS),
    Model("Toyota", "Hilux 2.8D", "ice", 80.0, 9.5, 1000, 35.0, 250, 170, 1, ICE_BASIC_SENSORS),
    Model("Ford", "Transit 2.0 EcoBlue", "ice", 80.0, 10.5, 1300, 35.0, 380, 150, 2, ICE_SENSORS),
    Model("Mercedes-Benz", "Sprinter 316 CDI", "ice", 93.0, 10.0, 1400, 35.0, 380, 150, 2, ICE_SENSORS),
    Model("Volvo", "FH 460", "ice", 600.0, 32.0, 20000, 60.0, 850, 90, 1, ICE_SENSORS),
    Model("MAN", "Lion's City 12", "ice", 300.0, 40.0, 6500, 60.0, 850, 80, 1, ICE_BASIC_SENSORS),
    Model("Caterpillar", "770G haul truck", "ice", 700.0, 140.0, 38000, 80.0, 750, 75, 4, ICE_SENSORS),
)  # fmt: skip


@dataclass(frozen=True)
class Sector:
    """An industry a tenant works in: its models, missions, hours and route style."""

    name: str
    models: tuple[int, ...]  # indices into MODELS
    mission_types: tuple[str, ...]
    open_hour: int  # local hours of operation [open, close); 0..24 = around the clock
    close_hour: int
    route_km: tuple[float, float]
    mean_speed_kmh: tuple[float, float]
    stops_per_km: float
    road_roughness: float


SECTORS: tuple[Sector, ...] = (
    Sector("logistics", (0, 1, 4, 7, 8, 9), ("delivery", "pickup", "line_haul"), 6, 20, (6, 35), (30, 55), 0.5, 1.0),
    Sector("ride_hail", (2, 3), ("passenger", "repositioning"), 5, 24, (3, 18), (22, 40), 0.8, 1.0),
    Sector("mining", (6, 11), ("haul", "inspection"), 0, 24, (2, 9), (18, 28), 0.2, 2.2),
    Sector("public_transit", (5, 10), ("scheduled_service",), 5, 23, (8, 22), (18, 26), 1.6, 1.1),
    Sector("municipal", (0, 6, 7), ("waste_collection", "inspection", "maintenance_run"), 7, 17, (4, 16), (15, 30), 1.2, 1.2),
)  # fmt: skip


@dataclass(frozen=True)
class City:
    """A city the fleets operate in, with a simple climate for environmental readings."""

    name: str
    lat: float
    lon: float
    utc_offset_h: int
    mean_temp_c: float
    annual_amp_c: float  # positive: northern-hemisphere seasons
    diurnal_amp_c: float
    humidity: float
    wet_hours: float  # share of hours with precipitation


CITIES: tuple[City, ...] = (
    City("Dubai", 25.2048, 55.2708, 4, 28.0, 7.5, 5.0, 55, 0.01),
    City("Abu Dhabi", 24.4539, 54.3773, 4, 28.0, 7.5, 5.5, 58, 0.01),
    City("Riyadh", 24.7136, 46.6753, 3, 26.5, 9.5, 7.0, 25, 0.02),
    City("Munich", 48.1351, 11.5820, 1, 9.0, 9.5, 5.0, 75, 0.12),
    City("Stockholm", 59.3293, 18.0686, 1, 7.0, 10.0, 3.5, 78, 0.11),
    City("Phoenix", 33.4484, -112.0740, -7, 24.0, 9.0, 8.0, 32, 0.03),
)

FIRMWARE_V1 = "2.8.4"
FIRMWARE_V2 = "3.2.0"
