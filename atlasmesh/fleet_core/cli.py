"""`atlasmesh fleet-core migrate|status|extract`: manage and extract the fleet-core database."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False)


def _url() -> str:
    from atlasmesh.settings import Settings

    return Settings().fleet_core_url


def _fail(error: Exception) -> typer.Exit:
    typer.echo(f"error: {error}", err=True)
    return typer.Exit(code=1)


@app.command()
def migrate() -> None:
    """Apply pending migrations (a no-op when the schema is current)."""
    from atlasmesh.fleet_core import db

    url = _url()
    try:
        applied = db.migrate(url)
        version = db.current_version(url)
    except db.FleetCoreError as exc:
        raise _fail(exc) from None
    target = db.mask_url(url)
    if applied:
        typer.echo(f"{target}: applied {', '.join(applied)}; schema version {version}")
    else:
        typer.echo(f"{target}: already at schema version {version}; nothing to apply")


@app.command()
def status() -> None:
    """Show the database (password masked), its schema version, pending migrations and row counts."""
    from atlasmesh.fleet_core import db
    from atlasmesh.fleet_core.store import FleetCoreStore

    url = _url()
    typer.echo(f"database: {db.mask_url(url)}")
    try:
        version = db.current_version(url)
        pending = db.pending_migrations(url)
    except db.FleetCoreError as exc:
        raise _fail(exc) from None
    typer.echo(f"schema version: {version or 'none (never migrated)'}")
    if pending:
        names = ", ".join(f"{m.filename} ({m.version})" for m in pending)
        typer.echo(f"pending migrations: {names}; run `atlasmesh fleet-core migrate`")
    if version is None:
        return
    try:
        with FleetCoreStore(url, migrate=False) as store:
            counts = store.row_counts()
    except db.FleetCoreError as exc:
        raise _fail(exc) from None
    width = max(map(len, counts))
    typer.echo("rows:")
    for table, count in counts.items():
        typer.echo(f"  {table:<{width}}  {count:>10,}")


@app.command()
def extract(
    table: Annotated[
        list[str] | None, typer.Option(help="Extract only this table (repeatable).")
    ] = None,
    full: Annotated[bool, typer.Option(help="Re-read whole tables, not just changes.")] = False,
) -> None:
    """Copy changed rows (allow-listed columns) to the lake snapshots and ClickHouse fleet_core."""
    from datetime import UTC, datetime

    from atlasmesh.fleet_core import db
    from atlasmesh.fleet_core.extract import extract_all
    from atlasmesh.lake import Lake
    from atlasmesh.settings import Settings
    from atlasmesh.warehouse.client import connect

    settings = Settings()
    try:
        results = extract_all(
            settings.fleet_core_url,
            Lake.from_settings(settings),
            connect(settings),
            now=datetime.now(UTC),
            full=full,
            tables=table or None,
        )
    except db.FleetCoreError as exc:
        raise _fail(exc) from None
    width = max(map(len, results))
    for name, result in results.items():
        typer.echo(
            f"  {name:<{width}}  read {result.rows_read:>9,}  written {result.rows_written:>9,}"
            f"  deletes {result.deletes:>6,}  {result.duration_s:6.2f}s"
        )
