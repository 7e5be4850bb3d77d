"""`atlasmesh simulate`: generate a fleet's telemetry, Fleet OS records and hidden ground truth."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta

import typer


def _default_start(days: float) -> datetime:
    """Start so the simulated period ends at the current hour (UTC)."""
    from atlasmesh.simulator.config import MAX_DAYS

    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    # Days out of range (NaN, inf, 1e12) would break timedelta; SimConfig names the mistake.
    return end - timedelta(days=days) if 0 < days <= MAX_DAYS else end


def simulate(
    seed: int = typer.Option(42, "--seed", help="Random seed: the same seed gives the same bytes."),
    vehicles: int = typer.Option(36, "--vehicles", help="Number of vehicles."),
    days: float = typer.Option(21.0, "--days", help="Simulated days (fractions allowed)."),
    interval_s: float = typer.Option(
        30.0, "--interval-s", help="Seconds between telemetry samples."
    ),
    start: str | None = typer.Option(
        None,
        "--start",
        help="First simulated moment, UTC date or datetime (2026-11-01 or 2026-11-01T06:00:00Z). "
        "Default: so the period ends at the current hour.",
    ),
    fault_rate: float = typer.Option(
        0.01, "--fault-rate", help="Share of events with an injected fault."
    ),
    firmware_update_share: float = typer.Option(
        0.3, "--firmware-update-share", help="Share of vehicles moving to schema v2 mid-period."
    ),
    batch_s: int | None = typer.Option(
        None,
        "--batch-s",
        help="Gateway batch window in seconds (multiple of 60). Default: by interval.",
    ),
    wear_factor: float = typer.Option(1.0, "--wear-factor", help="Speed-up of component wear."),
    reset: bool = typer.Option(
        False,
        "--reset",
        help="First delete landing telemetry, fleet-core rows and earlier ground truth.",
    ),
) -> None:
    """Simulate a fleet: telemetry to the lake's landing zone, records to fleet-core."""
    from rich.console import Console
    from rich.table import Table

    from atlasmesh.fleet_core.db import FleetCoreError
    from atlasmesh.fleet_core.store import ConstraintViolation
    from atlasmesh.lake import LakeError
    from atlasmesh.settings import Settings
    from atlasmesh.simulator.config import SimConfig, SimConfigError
    from atlasmesh.simulator.run import reset_outputs
    from atlasmesh.simulator.run import simulate as run_simulation

    console = Console(stderr=True)
    try:
        config = SimConfig(
            seed=seed,
            vehicles=vehicles,
            days=days,
            start=start if start is not None else _default_start(days),
            interval_s=interval_s,
            fault_rate=fault_rate,
            firmware_update_share=firmware_update_share,
            batch_s=batch_s,
            wear_factor=wear_factor,
        )
    except SimConfigError as exc:
        raise typer.BadParameter(str(exc)) from None
    settings = Settings()
    try:
        if reset:
            reset_outputs(settings)
        summary = run_simulation(config, settings, progress=sys.stderr.isatty())
    except (FleetCoreError, LakeError) as exc:
        console.print(f"[red]simulate failed:[/red] {exc}")
        if isinstance(exc, ConstraintViolation) and not reset:
            console.print(
                "The fleet-core database may hold an earlier simulation of another world (seed, "
                "vehicles or start). Add --reset to delete "
                "earlier landing telemetry, fleet-core rows and ground truth first, or point "
                "ATLASMESH_HOME elsewhere."
            )
        raise typer.Exit(1) from None
    table = Table(title=f"simulation {summary.run_id}", show_header=False)
    rows = [
        ("period", f"{config.start:%Y-%m-%d %H:%M} .. {config.end:%Y-%m-%d %H:%M} UTC"),
        ("events recorded", f"{summary.events:,}"),
        ("lines delivered", f"{summary.lines:,} in {summary.files:,} files"),
        ("faults injected", f"{sum(summary.faults.values()):,}"),
        ("component failures", f"{summary.failures:,}"),
        (
            "fleet-core rows",
            ", ".join(f"{t} {n:,}" for t, n in summary.fleet_core_rows.items() if n),
        ),
        ("ground truth", str(summary.ground_truth_dir)),
        ("time", f"{summary.elapsed_s:.1f} s ({summary.events_per_s:,.0f} events/s)"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    Console().print(table)
