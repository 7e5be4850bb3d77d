"""The `atlasmesh` command line: one entry, sub-commands owned by the library modules."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help="AtlasMesh fleet data platform.")


def _register() -> None:
    # Sub-command modules import their heavy dependencies lazily, so `atlasmesh --help` is fast.
    from atlasmesh.fleet_core.cli import app as fleet_core_app
    from atlasmesh.simulator.cli import simulate
    from atlasmesh.warehouse.cli import app as warehouse_app

    app.add_typer(warehouse_app, name="warehouse", help="The embedded ClickHouse service.")
    app.add_typer(fleet_core_app, name="fleet-core", help="The fleet-core operational database.")
    app.command("simulate")(simulate)


_register()
