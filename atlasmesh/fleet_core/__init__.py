"""The fleet-core operational database: versioned migrations and a store, SQLite or PostgreSQL."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from atlasmesh.fleet_core.db import (
        FleetCoreError,
        MigrationError,
        current_version,
        make_engine,
        mask_url,
        migrate,
    )
    from atlasmesh.fleet_core.store import ConstraintViolation, FleetCoreStore

_EXPORTS = {
    "FleetCoreError": "db",
    "MigrationError": "db",
    "current_version": "db",
    "make_engine": "db",
    "mask_url": "db",
    "migrate": "db",
    "ConstraintViolation": "store",
    "FleetCoreStore": "store",
}
__all__ = [
    "ConstraintViolation",
    "FleetCoreError",
    "FleetCoreStore",
    "MigrationError",
    "current_version",
    "make_engine",
    "mask_url",
    "migrate",
]


def __getattr__(name: str) -> Any:
    # SQLAlchemy loads only when used, so `atlasmesh --help` (which imports the CLI
    # module inside this package) stays fast.
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
