"""`atlasmesh alerts list | show | ack | resolve | deliver`: on-call's view of the alert store."""

from __future__ import annotations

import getpass
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from atlasmesh.alerts.model import Alert
    from atlasmesh.settings import Settings

app = typer.Typer(no_args_is_help=True, add_completion=False)

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_STATUS_HELP = "open (triggered or acknowledged), all, triggered, acknowledged or resolved"


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return os.environ.get("USER") or "unknown"


@app.callback()
def _options(
    ctx: typer.Context,
    database: str = typer.Option("ops", "--database", help="Warehouse database of the alerts."),
) -> None:
    """The platform's alerts: list them, acknowledge and resolve them (audited), send them."""
    # The name goes into SQL between backquotes, and a typo would create a new database.
    if not _IDENTIFIER.fullmatch(database):
        raise typer.BadParameter(
            f"{database!r} is not a database name (letters, digits and _, not first a digit)",
            param_hint="--database",
        )
    ctx.obj = {"database": database}


@contextmanager
def _client(settings: Settings | None = None) -> Iterator[Any]:
    from atlasmesh.settings import Settings
    from atlasmesh.warehouse.client import connect

    client = connect(settings or Settings())
    try:
        yield client
    finally:
        client.close()


@contextmanager
def _errors() -> Iterator[None]:
    from atlasmesh.alerts.model import AlertError

    try:
        yield
    except AlertError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def _when(value: datetime | None) -> str:
    return "-" if value is None else f"{value:%Y-%m-%d %H:%M:%S}"


def _line(alert: Alert) -> str:
    message = alert.message if len(alert.message) <= 90 else alert.message[:87] + "..."
    return (
        f"{alert.alert_id[:8]}  {alert.status:<12} {alert.severity:<8} {alert.alert_type:<20} "
        f"{_when(alert.triggered_at)}  {alert.occurrences:>5}  {message}"
    )


@app.command("list")
def list_(
    ctx: typer.Context,
    status: str = typer.Option("open", "--status", help=_STATUS_HELP),
    alert_type: str | None = typer.Option(None, "--type", help="Only this alert type."),
    limit: int = typer.Option(200, "--limit", min=1, help="At most this many alerts."),
) -> None:
    """Alerts, most severe and newest first (times UTC; any unique id prefix works)."""
    from atlasmesh.alerts.store import list_alerts

    with _errors(), _client() as client:
        try:
            alerts = list_alerts(
                client, status, alert_type=alert_type, limit=limit, database=ctx.obj["database"]
            )
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--status") from None
    if not alerts:
        typer.echo(f"no {status} alerts" if status != "all" else "no alerts")
        return
    typer.echo(
        f"{'ID':<8}  {'STATUS':<12} {'SEVERITY':<8} {'TYPE':<20} {'TRIGGERED (UTC)':<19}  "
        "SEEN  MESSAGE"
    )
    for alert in alerts:
        typer.echo(_line(alert))


def _details(alert: Alert, history: list[Any]) -> list[str]:
    lines = [
        f"alert       {alert.alert_id}",
        f"type        {alert.alert_type} ({alert.title})",
        f"severity    {alert.severity}",
        f"status      {alert.status}",
        f"message     {alert.message}",
        f"subject     {alert.subject or '-'}",
        f"triggered   {_when(alert.triggered_at)} UTC, seen {alert.occurrences} time(s), "
        f"last {_when(alert.last_seen_at)}",
        f"acked       {_when(alert.acknowledged_at)} by {alert.acknowledged_by or '-'}",
        f"resolved    {_when(alert.resolved_at)} by {alert.resolved_by or '-'}"
        + (f" ({alert.resolution_note})" if alert.resolution_note else ""),
        f"runbook     {alert.runbook}",
        f"dagster run {alert.dagster_run_id or '-'}",
        f"fingerprint {alert.fingerprint}",
        "context",
        *(f"  {k}: {v}" for k, v in sorted(alert.context.items())),
        "history",
    ]
    for entry in history:
        note = entry.context.get("note") or ""
        lines.append(
            f"  {_when(entry.performed_at)}  {entry.action:<20} {entry.actor}"
            + (f"  ({note})" if note else "")
        )
    return lines


@app.command()
def show(
    ctx: typer.Context, alert_id: str = typer.Argument(..., help="Id or unique prefix.")
) -> None:
    """One alert in full: context, runbook, Dagster run and its audited history."""
    from atlasmesh.alerts.audit import read_audit
    from atlasmesh.alerts.store import get_alert

    database = ctx.obj["database"]
    with _errors(), _client() as client:
        alert = get_alert(client, alert_id, database=database)
        history = read_audit(
            client, resource_type="alert", resource_id=alert.alert_id, database=database
        )
    typer.echo("\n".join(_details(alert, history)))


_BY = typer.Option(None, "--by", help="Who does it (default: the OS user).")
_NOTE = typer.Option("", "--note", help="Why, or what was done (kept in the audit log).")


def _transition(ctx: typer.Context, action: str, alert_id: str, by: str | None, note: str) -> None:
    """Acknowledge or resolve an alert and echo who did it and when."""
    from atlasmesh.alerts import store

    change = store.acknowledge if action == "acknowledged" else store.resolve
    with _errors(), _client() as client:
        # An explicit --by "" is a mistake to report, not a request for the OS user.
        who = _os_user() if by is None else by
        alert = change(client, alert_id, who, note=note, database=ctx.obj["database"])
    who, when = alert.last_change
    typer.echo(f"{action} {alert.alert_id} ({alert.alert_type}) by {who} at {_when(when)} UTC")


@app.command()
def ack(
    ctx: typer.Context,
    alert_id: str = typer.Argument(..., help="Id or unique prefix."),
    by: str | None = _BY,
    note: str = _NOTE,
) -> None:
    """Acknowledge an alert: you are on it (recorded with who and when in ops.audit_log)."""
    _transition(ctx, "acknowledged", alert_id, by, note)


@app.command()
def resolve(
    ctx: typer.Context,
    alert_id: str = typer.Argument(..., help="Id or unique prefix."),
    by: str | None = _BY,
    note: str = _NOTE,
) -> None:
    """Resolve an alert (recorded with who and when in ops.audit_log)."""
    _transition(ctx, "resolved", alert_id, by, note)


@app.command()
def deliver(ctx: typer.Context) -> None:
    """Send due notifications to the webhook now (a Dagster sensor does this every 30 s)."""
    from atlasmesh.alerts.delivery import deliver_pending
    from atlasmesh.settings import Settings

    settings = Settings()
    with _errors(), _client(settings) as client:
        report = deliver_pending(client, settings, database=ctx.obj["database"])
    skipped = f"skipped {report.skipped} (no webhook configured)" if report.skipped else ""
    typer.echo(
        f"delivered {report.delivered}, failed {report.failed}, "
        f"{skipped + ', ' if skipped else ''}waiting {report.waiting}"
    )
    if report.failed:
        raise typer.Exit(1)
