"""The telemetry schema registry: lookup by folder and version, and the compatibility check."""

from __future__ import annotations

import dataclasses

import pytest

from atlasmesh.telemetry import registry
from atlasmesh.telemetry.registry import (
    PROCESSED_SCHEMA,
    REGISTRY,
    V1,
    V1_TO_V2,
    V2,
    Field,
    JsonType,
    Migration,
    Range,
    SchemaCompatibilityError,
    SchemaRegistry,
    TelemetrySchema,
    UnknownSchemaError,
    check_compatible,
)


def _evolve(base: TelemetrySchema, version: str, **changes: Field | None) -> TelemetrySchema:
    """A copy of `base` at `version` with fields replaced (Field), removed (None) or added."""
    fields = [changes.pop(f.name, f) for f in base.fields]
    fields += list(changes.values())
    return TelemetrySchema(base.name, version, tuple(f for f in fields if f is not None))


def test_lookup_by_folder_exact_version_and_minor() -> None:
    assert registry.get("v1") is V1
    assert registry.get("v2") is V2
    assert registry.get("1.0.0") is V1
    assert registry.get("2.0.0") is V2
    # Minor and patch versions of a registered major are read by that major's schema.
    assert registry.get("2.3.1") is V2
    assert REGISTRY.majors == (1, 2)
    assert REGISTRY.latest is V2


@pytest.mark.parametrize(
    ("version", "message"),
    [("3.0.0", "major version 3"), ("v9", "major version 9"), ("1.0", "MAJOR.MINOR.PATCH")],
)
def test_unknown_versions_are_refused_with_a_clear_message(version: str, message: str) -> None:
    with pytest.raises(UnknownSchemaError, match=message) as exc:
        registry.get(version)
    assert "v1" in str(exc.value)  # the message says what is registered


def test_v1_to_v2_needs_its_migration() -> None:
    with pytest.raises(SchemaCompatibilityError) as exc:
        check_compatible(V1, V2)
    text = str(exc.value)
    assert "odometer_km: added required" in text
    assert "firmware_version: added required" in text
    assert "heading" not in text  # the rename keeps the old name as an alias: not breaking

    report = check_compatible(V1, V2, V1_TO_V2)
    assert report.ok
    assert {c.path for c in report.breaking} == {"odometer_km", "firmware_version"}
    assert all(c.covered_by_migration for c in report.breaking)


def test_every_wire_field_lands_in_a_processed_column() -> None:
    for schema in REGISTRY:
        kept: set[str] = set()  # paths whose value is kept (own column, or a parent's JSON)
        for path, f in schema.walk():
            parent = path.rpartition(".")[0]
            if f.column is not None:
                assert f.column in PROCESSED_SCHEMA.names, f"{schema.version} {path}"
                kept.add(path)
            elif parent in kept:
                kept.add(path)
            elif not f.fields:
                pytest.fail(f"{schema.version} {path} has no processed column")
    # A renamed field keeps its processed column, so v1 and v2 rows share it.
    assert V1.field("heading_degrees").column == V2.field("heading_deg").column


def test_removed_field_is_breaking_unless_aliased_or_migrated() -> None:
    removed = _evolve(V2, "3.0.0", speed_kmh=None)
    with pytest.raises(SchemaCompatibilityError, match="speed_kmh: removed"):
        check_compatible(V2, removed)
    migration = Migration("2.0.0", "3.0.0", "speed now derived", defaults={"speed_kmh": None})
    assert check_compatible(V2, removed, migration).ok

    speed = V2.field("speed_kmh")
    aliased = _evolve(
        V2,
        "2.1.0",
        speed_kmh=None,
        velocity_kmh=dataclasses.replace(speed, name="velocity_kmh", aliases=("speed_kmh",)),
    )
    report = check_compatible(V2, aliased)
    assert not report.breaking
    assert any(c.kind == "renamed" for c in report.changes)


@pytest.mark.parametrize(
    ("change", "kind"),
    [
        ({"speed_kmh": dataclasses.replace(V2.field("speed_kmh"), type=JsonType.STRING)}, "type"),
        (
            {"speed_kmh": dataclasses.replace(V2.field("speed_kmh"), range=Range(0, 200))},
            "range narrowed",
        ),
        (
            {"custom_data": dataclasses.replace(V2.field("custom_data"), required=True)},
            "made required",
        ),
        ({"speed_kmh": dataclasses.replace(V2.field("speed_kmh"), required=False)}, "optional"),
        ({"trailer_id": Field("trailer_id", JsonType.STRING, required=True)}, "added required"),
        (
            {
                "operational_status": dataclasses.replace(
                    V2.field("operational_status"), enum=("driving", "idle")
                )
            },
            "values narrowed",
        ),
    ],
)
def test_reader_breaking_changes_are_refused(change: dict[str, Field], kind: str) -> None:
    new = _evolve(V2, "3.0.0", **change)
    with pytest.raises(SchemaCompatibilityError, match=kind):
        check_compatible(V2, new)
    path = next(iter(change))
    migration = Migration(
        "2.0.0", "3.0.0", "explicit plan", defaults={path: None}, transforms={path: "convert"}
    )
    assert check_compatible(V2, new, migration).ok


def test_additive_change_is_compatible_with_a_minor_bump() -> None:
    new = _evolve(V2, "2.1.0", trailer_id=Field("trailer_id", JsonType.STRING, column="x"))
    report = check_compatible(V2, new)
    assert report.ok and not report.breaking
    widened = _evolve(
        V2, "2.2.0", speed_kmh=dataclasses.replace(V2.field("speed_kmh"), range=Range(0, 400))
    )
    assert not check_compatible(V2, widened).breaking


def test_version_rules() -> None:
    new = _evolve(V2, "2.0.1", trailer_id=Field("trailer_id", JsonType.STRING))
    with pytest.raises(SchemaCompatibilityError, match="minor version bump"):
        check_compatible(V2, new)
    with pytest.raises(SchemaCompatibilityError, match="higher version"):
        check_compatible(V2, V1)
    breaking_minor = _evolve(V2, "2.1.0", speed_kmh=None)
    migration = Migration("2.0.0", "2.1.0", "x", defaults={"speed_kmh": None})
    with pytest.raises(SchemaCompatibilityError, match="new major version"):
        check_compatible(V2, breaking_minor, migration)


def test_registry_refuses_an_incompatible_chain() -> None:
    broken = _evolve(V2, "3.0.0", vehicle_id=None)
    with pytest.raises(SchemaCompatibilityError, match="vehicle_id: removed"):
        SchemaRegistry([V1, V2, broken], [V1_TO_V2])
