"""`atlasmesh warehouse serve | status | stop`: manage the embedded ClickHouse service."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from atlasmesh.settings import Settings

app = typer.Typer(no_args_is_help=True, add_completion=False)


def _settings() -> Settings:
    from atlasmesh.settings import Settings

    return Settings()


@app.command()
def serve(
    foreground: bool = typer.Option(
        False, "--foreground", help="Run in this terminal (logs to stderr) instead of detached."
    ),
) -> None:
    """Start the embedded warehouse service for $ATLASMESH_HOME (or report the running one)."""
    from atlasmesh.warehouse import service

    settings = _settings()
    try:
        already = service.status(settings)
        url = service.serve(settings, foreground=foreground)
    except service.WarehouseServiceError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if foreground:
        typer.echo("warehouse service stopped")
        return
    paths = service.ServicePaths.of(settings)
    verb = "already running" if already else "started"
    typer.echo(f"warehouse service {verb} at {url}")
    typer.echo(f"  data: {settings.warehouse_dir}\n  log:  {paths.logfile}")
    typer.echo("  stop it with: atlasmesh warehouse stop")


@app.command()
def status() -> None:
    """Print the warehouse URL if it answers; exit code 1 if it does not."""
    from atlasmesh.warehouse import service

    settings = _settings()
    url = service.status(settings)
    if url is None:
        if not settings.embedded_warehouse:
            typer.echo(
                f"the ClickHouse server at {settings.clickhouse_url} does not answer /ping "
                "(ATLASMESH_CLICKHOUSE_URL)",
                err=True,
            )
        else:
            typer.echo("warehouse service: not running", err=True)
        raise typer.Exit(1)
    typer.echo(url)


def _wait_seconds(value: float) -> float:
    # A negative or NaN wait would skip the graceful stop and SIGKILL the service at once.
    if not value >= 0:
        raise typer.BadParameter(f"must be 0 or more seconds, got {value}")
    return value


@app.command()
def stop(
    timeout: float = typer.Option(
        30.0,
        callback=_wait_seconds,
        help="Seconds to wait for running queries before killing it (0: kill at once).",
    ),
) -> None:
    """Stop this home's warehouse service gracefully."""
    from atlasmesh.warehouse import service

    settings = _settings()
    if not settings.embedded_warehouse:
        typer.echo("ATLASMESH_CLICKHOUSE_URL is set: no embedded warehouse service to stop")
        return
    stopped = service.stop(settings, timeout=timeout)
    typer.echo("warehouse service stopped" if stopped else "warehouse service was not running")
