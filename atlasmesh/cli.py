"""The `atlasmesh` command line: one entry, sub-commands owned by the library modules."""

from __future__ import annotations

import contextlib
import re

import typer

from atlasmesh.analytics import DEFAULT_DOCS_PORT, DEFAULT_SCHEMA


def _schema_name(value: str) -> str:
    # dbt puts the name into DDL (and derives <schema>_staging from it): a plain identifier only.
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
        raise typer.BadParameter(
            f"{value!r} is not a database name (letters, digits and _, not first a digit)"
        )
    return value


app = typer.Typer(no_args_is_help=True, add_completion=False, help="AtlasMesh fleet data platform.")


@app.command(
    "dbt",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def dbt(
    ctx: typer.Context,
    schema: str = typer.Option(
        DEFAULT_SCHEMA,
        "--schema",
        callback=_schema_name,
        help="Marts database (staging and intermediate go to <schema>_staging, _intermediate).",
    ),
) -> None:
    """Run dbt in dbt_project/ against the platform's warehouse: atlasmesh dbt -- build."""
    from atlasmesh.analytics import dbt_passthrough
    from atlasmesh.settings import Settings

    raise typer.Exit(dbt_passthrough(Settings(), ctx.args, schema=schema))


@app.command("docs")
def docs(
    port: int = typer.Option(
        DEFAULT_DOCS_PORT,
        "--port",
        envvar="ATLASMESH_DOCS_PORT",
        min=1,
        max=65535,
        help="Loopback port to serve on.",
    ),
    serve: bool = typer.Option(True, "--serve/--no-serve", help="Serve after generating."),
    schema: str = typer.Option(
        DEFAULT_SCHEMA, "--schema", callback=_schema_name, help="Marts database to document."
    ),
) -> None:
    """Generate the dbt docs into $ATLASMESH_HOME/docs/site/ and serve them on 127.0.0.1."""
    from atlasmesh.analytics import docs_site_dir, generate_dbt_docs, serve_docs
    from atlasmesh.settings import Settings

    settings = Settings()
    try:
        generate_dbt_docs(settings, schema=schema)
    except RuntimeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    site = docs_site_dir(settings)
    typer.echo(f"docs site: {site}")
    if serve:
        typer.echo(f"serving on http://127.0.0.1:{port}/ (dbt docs: /dbt/), Ctrl-C to stop")
        try:
            with contextlib.suppress(KeyboardInterrupt):
                serve_docs(site, port)
        except OSError as exc:
            typer.echo(
                f"error: cannot serve on 127.0.0.1:{port}: {exc.strerror or exc}; the site is "
                "generated, serve it on another --port (or ATLASMESH_DOCS_PORT)",
                err=True,
            )
            raise typer.Exit(1) from None


def _register() -> None:
    # Sub-command modules import their heavy dependencies lazily, so `atlasmesh --help` is fast.
    from atlasmesh.alerts_cli import app as alerts_app
    from atlasmesh.fleet_core.cli import app as fleet_core_app
    from atlasmesh.simulator.cli import simulate
    from atlasmesh.warehouse.cli import app as warehouse_app

    app.add_typer(warehouse_app, name="warehouse", help="The embedded ClickHouse service.")
    app.add_typer(fleet_core_app, name="fleet-core", help="The fleet-core operational database.")
    app.command("simulate")(simulate)
    app.add_typer(alerts_app, name="alerts", help="The platform's alerts: list, ack, resolve.")


_register()


def main() -> None:
    """Run the command line; a bad ATLASMESH_* setting or an unreachable service is one line."""
    from pydantic import ValidationError

    from atlasmesh.lake import LakeError
    from atlasmesh.settings import setting_problems
    from atlasmesh.warehouse.client import WarehouseConnectionError

    try:
        app()
    except (LakeError, WarehouseConnectionError) as exc:
        # Their messages name the service, the address and the variables to fix, never a secret.
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(1) from None
    except ValidationError as exc:
        problems = setting_problems(exc)
        if problems is None:
            raise
        for problem in problems:
            typer.echo(f"error: {problem}", err=True)
        raise SystemExit(2) from None
