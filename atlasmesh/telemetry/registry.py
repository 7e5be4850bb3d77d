"""Versioned telemetry schemas, the one processed schema they normalise to, and the compatibility check."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

import pyarrow as pa

from atlasmesh.telemetry import policy

TELEMETRY = "vehicle_telemetry"
SEMVER_PATTERN = r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$"
_SEMVER = re.compile(SEMVER_PATTERN)
_FOLDER = re.compile(r"^v(0|[1-9][0-9]*)$")


class JsonType(StrEnum):
    """The JSON type a field must have on the wire."""

    STRING = "string"
    NUMBER = "number"
    OBJECT = "object"
    ARRAY = "array"


class Format(StrEnum):
    """A string field's required shape, checked after its JSON type."""

    UUID = "uuid"
    TIMESTAMP = "timestamp"
    SEMVER = "semver"


@dataclass(frozen=True)
class Range:
    """Closed numeric interval, optionally open at the top (heading 0..<360)."""

    low: float
    high: float
    high_exclusive: bool = False

    def contains(self, value: float) -> bool:
        """True when value lies inside the interval."""
        if value < self.low:
            return False
        return value < self.high if self.high_exclusive else value <= self.high

    def narrower_than(self, other: Range) -> bool:
        """True when some value allowed by `other` is refused by this range."""
        if self.low > other.low or self.high < other.high:
            return True
        return self.high == other.high and self.high_exclusive and not other.high_exclusive

    def __str__(self) -> str:
        return f"[{self.low:g}, {self.high:g}{')' if self.high_exclusive else ']'}"


@dataclass(frozen=True)
class Field:
    """One wire field: JSON type, whether it is required, its allowed values and aliases."""

    name: str
    type: JsonType
    required: bool = False
    range: Range | None = None
    aliases: tuple[str, ...] = ()
    # Processed column the value lands in; for objects the column of their JSON text.
    column: str | None = None
    # Known keys of an object (typed, each with its own column); other keys are ignored.
    fields: tuple[Field, ...] = ()
    # Objects without known keys are kept whole as JSON text (custom_data).
    free_form: bool = False
    items: JsonType | None = None
    item_pattern: str | None = None
    format: Format | None = None
    enum: tuple[str, ...] | None = None

    @property
    def names(self) -> tuple[str, ...]:
        """The canonical name followed by the aliases accepted on the wire."""
        return (self.name, *self.aliases)


@dataclass(frozen=True)
class TelemetrySchema:
    """One semantic version of the telemetry wire format."""

    name: str
    version: str
    fields: tuple[Field, ...]
    description: str = ""

    def __post_init__(self) -> None:
        if not _SEMVER.match(self.version):
            raise ValueError(f"schema version {self.version!r} is not MAJOR.MINOR.PATCH")

    @property
    def parts(self) -> tuple[int, int, int]:
        """(major, minor, patch)."""
        major, minor, patch = (int(p) for p in self.version.split("."))
        return major, minor, patch

    @property
    def major(self) -> int:
        """Major version: the landing folder `schema=v<major>`."""
        return self.parts[0]

    @property
    def folder(self) -> str:
        """Landing folder name of this schema's files (`v1`)."""
        return f"v{self.major}"

    def field(self, name: str) -> Field:
        """The top-level field called `name` (canonical name or alias)."""
        for f in self.fields:
            if name in f.names:
                return f
        raise KeyError(f"{self.name} {self.version} has no field {name!r}")

    def walk(self) -> Iterator[tuple[str, Field]]:
        """Every field with its dotted path, parents before children."""
        yield from _walk(self.fields, "")


def _walk(fields: Iterable[Field], prefix: str) -> Iterator[tuple[str, Field]]:
    for f in fields:
        path = f"{prefix}{f.name}"
        yield path, f
        yield from _walk(f.fields, f"{path}.")


class SchemaCompatibilityError(ValueError):
    """A schema change would break readers and no migration covers it."""


class UnknownSchemaError(KeyError):
    """A version or folder that the registry does not hold."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Migration:
    """An explicit plan that makes a reader-breaking change safe for readers."""

    from_version: str
    to_version: str
    description: str
    # Value readers get for a field that older (or newer) records do not carry.
    defaults: Mapping[str, object] = field(default_factory=dict)
    # old name -> new name, for renames without a wire alias.
    renames: Mapping[str, str] = field(default_factory=dict)
    # field -> how existing values are converted or re-validated (type, range, enum changes).
    transforms: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Change:
    """One difference between two schema versions, as a reader sees it."""

    path: str
    kind: str
    detail: str
    breaking: bool
    covered_by_migration: bool = False

    def __str__(self) -> str:
        flag = "breaking" if self.breaking else "compatible"
        if self.breaking and self.covered_by_migration:
            flag = "breaking, migrated"
        return f"{self.path}: {self.kind} ({flag}): {self.detail}"


@dataclass(frozen=True)
class CompatibilityReport:
    """What changed between two versions, and whether readers are safe."""

    old: str
    new: str
    changes: tuple[Change, ...]
    migration: Migration | None

    @property
    def breaking(self) -> tuple[Change, ...]:
        """Changes that would break readers without a migration."""
        return tuple(c for c in self.changes if c.breaking)

    @property
    def uncovered(self) -> tuple[Change, ...]:
        """Breaking changes the migration (if any) does not cover."""
        return tuple(c for c in self.breaking if not c.covered_by_migration)

    @property
    def ok(self) -> bool:
        """True when the new version may be registered."""
        return not self.uncovered


def check_compatible(
    old: TelemetrySchema, new: TelemetrySchema, migration: Migration | None = None
) -> CompatibilityReport:
    """Compare two versions; raise SchemaCompatibilityError on reader-breaking changes no migration covers."""
    if old.name != new.name:
        raise SchemaCompatibilityError(f"cannot compare schema {old.name!r} with {new.name!r}")
    if new.parts <= old.parts:
        raise SchemaCompatibilityError(
            f"{new.name} {new.version} must have a higher version than {old.version}"
        )
    if migration is not None and (migration.from_version, migration.to_version) != (
        old.version,
        new.version,
    ):
        raise SchemaCompatibilityError(
            f"migration {migration.from_version} -> {migration.to_version} does not apply to "
            f"{old.version} -> {new.version}"
        )
    changes = tuple(_diff(old.fields, new.fields, "", migration))
    report = CompatibilityReport(old.version, new.version, changes, migration)
    problems: list[str] = [str(c) for c in report.uncovered]
    if report.breaking and new.major == old.major:
        problems.append(
            f"breaking changes need a new major version: {old.version} -> {new.version} keeps "
            f"major {old.major}"
        )
    if changes and not report.breaking and new.parts[:2] == old.parts[:2]:
        problems.append(
            f"field changes need at least a minor version bump: {old.version} -> {new.version}"
        )
    if problems:
        hint = (
            "add a wire alias or a default, or register an explicit Migration"
            if report.uncovered
            else "bump the version"
        )
        raise SchemaCompatibilityError(
            f"{new.name} {old.version} -> {new.version} would break readers:\n  - "
            + "\n  - ".join(problems)
            + f"\nFix: {hint}."
        )
    return report


def _covered(migration: Migration | None, kind: str, path: str) -> bool:
    if migration is None:
        return False
    if kind == "removed":
        return path in migration.renames or path in migration.defaults
    if kind == "added required":
        return path in migration.defaults
    return path in migration.transforms


def _change(
    migration: Migration | None, path: str, kind: str, detail: str, breaking: bool = True
) -> Change:
    return Change(path, kind, detail, breaking, breaking and _covered(migration, kind, path))


def _diff(
    old_fields: Iterable[Field], new_fields: Iterable[Field], prefix: str, m: Migration | None
) -> Iterator[Change]:
    new_list = list(new_fields)
    matched: set[str] = set()
    for o in old_fields:
        path = f"{prefix}{o.name}"
        n = next((f for f in new_list if o.name in f.names), None)
        if n is None:
            yield _change(m, path, "removed", "readers and old producers still use this field")
            continue
        matched.add(n.name)
        if n.name != o.name:
            yield _change(m, path, "renamed", f"now {n.name!r}, old name kept as alias", False)
        for alias in o.aliases:
            if alias not in n.names:
                yield _change(m, path, "alias removed", f"producers sending {alias!r} refused")
        if n.type != o.type:
            yield _change(m, path, "type changed", f"{o.type} -> {n.type}")
            continue
        if o.required and not n.required:
            yield _change(m, path, "made optional", "readers that rely on a value get nulls")
        if n.required and not o.required:
            yield _change(m, path, "made required", "older records without it are refused")
        if o.range and n.range and n.range.narrower_than(o.range):
            yield _change(m, path, "range narrowed", f"{o.range} -> {n.range}")
        elif o.range and n.range and o.range.narrower_than(n.range):
            yield _change(m, path, "range widened", f"{o.range} -> {n.range}", False)
        elif (o.range is None) != (n.range is None):
            yield _change(m, path, "range changed", f"{o.range} -> {n.range}", n.range is not None)
        if o.enum != n.enum:
            removed = set(o.enum or ()) - set(n.enum or ())
            if n.enum is not None and (o.enum is None or removed):
                yield _change(m, path, "values narrowed", f"no longer allowed: {sorted(removed)}")
            else:
                yield _change(m, path, "values added", f"{o.enum} -> {n.enum}", False)
        if (o.format, o.item_pattern, o.items) != (n.format, n.item_pattern, n.items):
            yield _change(m, path, "format changed", f"{o.format} -> {n.format}")
        if o.column != n.column:
            yield _change(m, path, "column changed", f"{o.column} -> {n.column}")
        yield from _diff(o.fields, n.fields, f"{path}.", m)
    for n in new_list:
        if n.name in matched:
            continue
        path = f"{prefix}{n.name}"
        if n.required:
            yield _change(m, path, "added required", "older records do not carry it")
        else:
            yield _change(m, path, "added optional", "older records read as null", False)


def _sensor(name: str, rng: tuple[float, float]) -> Field:
    return Field(name, JsonType.NUMBER, range=Range(*rng), column=name)


SENSOR_FIELDS: tuple[Field, ...] = (
    _sensor("motor_temp_c", policy.TEMPERATURE_C_RANGE),
    _sensor("engine_temp_c", policy.TEMPERATURE_C_RANGE),
    _sensor("battery_temp_c", policy.TEMPERATURE_C_RANGE),
    _sensor("coolant_temp_c", policy.TEMPERATURE_C_RANGE),
    _sensor("tire_pressure_fl_kpa", policy.TIRE_PRESSURE_KPA_RANGE),
    _sensor("tire_pressure_fr_kpa", policy.TIRE_PRESSURE_KPA_RANGE),
    _sensor("tire_pressure_rl_kpa", policy.TIRE_PRESSURE_KPA_RANGE),
    _sensor("tire_pressure_rr_kpa", policy.TIRE_PRESSURE_KPA_RANGE),
    _sensor("vibration_rms_g", policy.VIBRATION_RMS_G_RANGE),
    _sensor("brake_pad_mm", policy.BRAKE_PAD_MM_RANGE),
    _sensor("aux_battery_v", policy.AUX_BATTERY_V_RANGE),
    _sensor("load_kg", policy.LOAD_KG_RANGE),
    _sensor("energy_rate", policy.ENERGY_RATE_RANGE),
)

_ENVIRONMENT_FIELDS: tuple[Field, ...] = (
    Field("ambient_temp_c", JsonType.NUMBER, range=Range(*policy.AMBIENT_TEMP_C_RANGE)),
    Field("humidity_percent", JsonType.NUMBER, range=Range(*policy.HUMIDITY_PERCENT_RANGE)),
    Field("precipitation", JsonType.STRING),
    Field("road_condition", JsonType.STRING),
)

_UUID = dict(type=JsonType.STRING, required=True, format=Format.UUID)
_V1_FIELDS: tuple[Field, ...] = (
    Field("telemetry_id", column="telemetry_id", **_UUID),
    Field("vehicle_id", column="vehicle_id", **_UUID),
    Field(
        "recorded_at", JsonType.STRING, required=True, format=Format.TIMESTAMP, column="recorded_at"
    ),
    Field(
        "schema_version",
        JsonType.STRING,
        required=True,
        format=Format.SEMVER,
        column="schema_version",
    ),
    Field(
        "location",
        JsonType.OBJECT,
        required=True,
        fields=(
            Field(
                "lat",
                JsonType.NUMBER,
                required=True,
                range=Range(*policy.LATITUDE_RANGE),
                column="latitude",
            ),
            Field(
                "lon",
                JsonType.NUMBER,
                required=True,
                range=Range(*policy.LONGITUDE_RANGE),
                column="longitude",
            ),
        ),
    ),
    Field(
        "speed_kmh",
        JsonType.NUMBER,
        required=True,
        range=Range(*policy.SPEED_KMH_RANGE),
        column="speed_kmh",
    ),
    Field(
        "heading_degrees",
        JsonType.NUMBER,
        required=True,
        range=Range(*policy.HEADING_DEGREES_RANGE, high_exclusive=True),
        column="heading_degrees",
    ),
    Field(
        "battery_level_percent",
        JsonType.NUMBER,
        range=Range(*policy.PERCENT_RANGE),
        column="battery_level_percent",
    ),
    Field(
        "fuel_level_percent",
        JsonType.NUMBER,
        range=Range(*policy.PERCENT_RANGE),
        column="fuel_level_percent",
    ),
    Field(
        "sensor_readings",
        JsonType.OBJECT,
        required=True,
        fields=SENSOR_FIELDS,
        column="sensor_readings",
    ),
    Field(
        "diagnostic_codes",
        JsonType.ARRAY,
        required=True,
        items=JsonType.STRING,
        item_pattern=policy.DTC_PATTERN,
        column="diagnostic_codes",
    ),
    Field(
        "environmental_conditions",
        JsonType.OBJECT,
        fields=_ENVIRONMENT_FIELDS,
        column="environmental_conditions",
    ),
    Field(
        "operational_status",
        JsonType.STRING,
        required=True,
        enum=policy.OPERATIONAL_STATUSES,
        column="operational_status",
    ),
    Field("custom_data", JsonType.OBJECT, free_form=True, column="custom_data"),
)


def _v2_fields() -> tuple[Field, ...]:
    out: list[Field] = []
    for f in _V1_FIELDS:
        if f.name == "heading_degrees":
            f = Field(
                "heading_deg",
                f.type,
                required=True,
                range=f.range,
                aliases=("heading_degrees",),
                column="heading_degrees",
            )
        out.append(f)
        if f.name == "fuel_level_percent":
            out.append(
                Field(
                    "odometer_km",
                    JsonType.NUMBER,
                    required=True,
                    range=Range(*policy.ODOMETER_KM_RANGE),
                    column="odometer_km",
                )
            )
            out.append(
                Field("firmware_version", JsonType.STRING, required=True, column="firmware_version")
            )
    return tuple(out)


V1 = TelemetrySchema(
    TELEMETRY, "1.0.0", _V1_FIELDS, "The seed's VEHICLE_TELEMETRY (seed section 3)."
)
V2 = TelemetrySchema(
    TELEMETRY,
    "2.0.0",
    _v2_fields(),
    "Newer firmware: adds odometer_km and firmware_version, renames heading_degrees to heading_deg.",
)
V1_TO_V2 = Migration(
    "1.0.0",
    "2.0.0",
    "1.x firmware has no odometer or firmware report: 1.x records read as null in both columns.",
    defaults={"odometer_km": None, "firmware_version": None},
)

_SENSOR_TYPE = pa.float64()
PROCESSED_SCHEMA = pa.schema(
    [
        pa.field("telemetry_id", pa.string(), nullable=False),
        pa.field("vehicle_id", pa.string(), nullable=False),
        pa.field("recorded_at", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("ingested_at", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("latitude", pa.float64(), nullable=False),
        pa.field("longitude", pa.float64(), nullable=False),
        pa.field("speed_kmh", pa.float64(), nullable=False),
        pa.field("heading_degrees", pa.float64(), nullable=False),
        pa.field("battery_level_percent", pa.float64()),
        pa.field("fuel_level_percent", pa.float64()),
        pa.field("odometer_km", pa.float64()),
        pa.field("firmware_version", pa.string()),
        pa.field("sensor_readings", pa.string(), nullable=False),
        pa.field("diagnostic_codes", pa.list_(pa.string()), nullable=False),
        pa.field("environmental_conditions", pa.string()),
        pa.field("operational_status", pa.string(), nullable=False),
        pa.field("custom_data", pa.string()),
        pa.field("schema_version", pa.string(), nullable=False),
        *(pa.field(f.name, _SENSOR_TYPE) for f in SENSOR_FIELDS),
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("line_number", pa.int64(), nullable=False),
    ],
    metadata={"atlasmesh.dataset": "processed/vehicle_telemetry"},
)


class SchemaRegistry:
    """All registered versions of one telemetry schema, checked pairwise when built."""

    def __init__(self, schemas: Iterable[TelemetrySchema], migrations: Iterable[Migration] = ()):
        ordered = sorted(schemas, key=lambda s: s.parts)
        if not ordered:
            raise ValueError("a registry needs at least one schema")
        by_pair = {(m.from_version, m.to_version): m for m in migrations}
        for old, new in itertools.pairwise(ordered):
            check_compatible(old, new, by_pair.get((old.version, new.version)))
        self.schemas: tuple[TelemetrySchema, ...] = tuple(ordered)
        self.migrations: dict[tuple[str, str], Migration] = by_pair
        self._by_version = {s.version: s for s in ordered}
        # Within a major, the newest registered minor reads every record of that major:
        # minors only add optional fields, which older readers ignore.
        self._by_major = {s.major: s for s in ordered}

    @property
    def majors(self) -> tuple[int, ...]:
        """Registered major versions."""
        return tuple(sorted(self._by_major))

    @property
    def latest(self) -> TelemetrySchema:
        """The newest registered version."""
        return self.schemas[-1]

    def get(self, version: str) -> TelemetrySchema:
        """The schema for a folder (`v2`) or a record's schema_version (`2.0.0`, `2.3.1`)."""
        if not isinstance(version, str):
            raise UnknownSchemaError(f"schema version must be a string, got {version!r}")
        folder = _FOLDER.match(version)
        if folder:
            major = int(folder.group(1))
        else:
            parts = _SEMVER.match(version)
            if not parts:
                raise UnknownSchemaError(
                    f"schema version {version!r} is neither MAJOR.MINOR.PATCH nor a folder "
                    f"v<MAJOR>; registered: {', '.join(f'{v} ({s.folder})' for v, s in self._by_version.items())}"
                )
            if version in self._by_version:
                return self._by_version[version]
            major = int(parts.group(1))
        if major not in self._by_major:
            raise UnknownSchemaError(
                f"schema major version {major} ({version!r}) is not registered; registered "
                f"majors: {', '.join(f'v{m}' for m in self.majors)}"
            )
        return self._by_major[major]

    def __iter__(self) -> Iterator[TelemetrySchema]:
        return iter(self.schemas)


REGISTRY = SchemaRegistry([V1, V2], [V1_TO_V2])


def get(version: str) -> TelemetrySchema:
    """The registered schema for a folder (`v1`) or an exact or minor `schema_version`."""
    return REGISTRY.get(version)
