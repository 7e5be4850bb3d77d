"""The alert store in the warehouse (`ops`): raise with dedup, ack, resolve, auto-resolve, list.

ClickHouse has no row updates, so nothing here is ever updated in place. An alert is an
append-only set of rows in four tables, folded into its current state by the `alerts` view:

- `alerts_raised` (ReplacingMergeTree by alert_id): what was raised, written once. Ids are
  derived from the fingerprint and its episode (the number of its resolved alerts), so two
  evaluators raising the same new problem at once write the same row twice, which FINAL
  collapses into one alert.
- `alert_events` (MergeTree): lifecycle events (acknowledged, resolved) with who and when.
  The first event of each kind wins, so an acknowledgement racing an auto-resolve loses
  nothing: both are kept and both show.
- `alert_sightings` (AggregatingMergeTree): one row per time the problem was seen again,
  summed into `occurrences` and maxed into `last_seen_at` by merges and by the view.
- `alert_deliveries` (ReplacingMergeTree by version): the delivery outbox, see delivery.py.

Every lifecycle change also writes a row to `audit_log` (audit.py).
"""

from __future__ import annotations

import logging
import uuid
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from atlasmesh.alerts.audit import AuditRecord, audit_ddl, write_audits
from atlasmesh.alerts.model import (
    OPEN_STATUSES,
    STATUSES,
    Alert,
    AlertError,
    AlertNotFoundError,
    AlertSpec,
    AlertStateError,
)

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

log = logging.getLogger("atlasmesh.alerts")

DATABASE = "ops"
RAISED_TABLE = "alerts_raised"
EVENTS_TABLE = "alert_events"
SIGHTINGS_TABLE = "alert_sightings"
DELIVERIES_TABLE = "alert_deliveries"
ALERTS_VIEW = "alerts"
# Alert ids are uuid5(fingerprint#episode) in this namespace: deterministic, so concurrent
# raises of one new problem agree on the id.
_ID_NAMESPACE = uuid.UUID("5b0f1c2e-7a43-4d8e-9c61-0a1e2f3b4c5d")
_LOG_LEVEL = {"critical": logging.ERROR, "warning": logging.WARNING, "info": logging.INFO}
# Notifications the outbox carries; acknowledgements are not sent (the person who acked knows).
NOTIFIED_EVENTS = ("triggered", "resolved")
MIN_PREFIX = 6
MAX_ACTOR = 200

_RAISED_COLUMNS: dict[str, str] = {
    "alert_id": "UUID",
    "fingerprint": "String",
    "source": "LowCardinality(String)",
    "alert_type": "LowCardinality(String)",
    "severity": "LowCardinality(String)",
    "message": "String",
    "context": "String",
    "runbook": "String",
    "organization_id": "Nullable(UUID)",
    "fleet_id": "Nullable(UUID)",
    "vehicle_id": "Nullable(UUID)",
    "trip_id": "Nullable(UUID)",
    "dagster_run_id": "String",
    "triggered_at": "DateTime64(3, 'UTC')",
}
_EVENT_COLUMNS: dict[str, str] = {
    "alert_id": "UUID",
    "event": "LowCardinality(String)",
    "at": "DateTime64(3, 'UTC')",
    "actor": "String",
    "note": "String",
}
_SIGHTING_COLUMNS: dict[str, str] = {
    "alert_id": "UUID",
    "occurrences": "SimpleAggregateFunction(sum, UInt64)",
    "last_seen_at": "SimpleAggregateFunction(max, DateTime64(3, 'UTC'))",
}
DELIVERY_COLUMNS: dict[str, str] = {
    "delivery_id": "UUID",
    "alert_id": "UUID",
    "event": "LowCardinality(String)",
    "channel": "LowCardinality(String)",
    # pending -> delivered, or skipped when no webhook is configured (log only).
    "status": "LowCardinality(String)",
    "attempts": "UInt32",
    "created_at": "DateTime64(3, 'UTC')",
    "next_attempt_at": "DateTime64(3, 'UTC')",
    "last_attempt_at": "Nullable(DateTime64(3, 'UTC'))",
    "delivered_at": "Nullable(DateTime64(3, 'UTC'))",
    "last_error": "String",
    "version": "UInt64",
}

_VIEW_COLUMNS = (
    "alert_id",
    "alert_type",
    "severity",
    "source",
    "fingerprint",
    "message",
    "context",
    "runbook",
    "organization_id",
    "fleet_id",
    "vehicle_id",
    "trip_id",
    "dagster_run_id",
    "status",
    "triggered_at",
    "last_seen_at",
    "occurrences",
    "acknowledged_at",
    "acknowledged_by",
    "resolved_at",
    "resolved_by",
    "resolution_note",
)


def _columns(columns: dict[str, str]) -> str:
    return ",\n".join(f"    `{name}` {kind}" for name, kind in columns.items())


def schema_statements(database: str = DATABASE) -> list[str]:
    """The DDL of the alert store, the outbox and the audit log, in order (each idempotent)."""
    db = f"`{database}`"
    return [
        *audit_ddl(database),
        f"CREATE TABLE IF NOT EXISTS {db}.`{RAISED_TABLE}` (\n{_columns(_RAISED_COLUMNS)}\n)\n"
        "ENGINE = ReplacingMergeTree\nORDER BY alert_id",
        f"CREATE TABLE IF NOT EXISTS {db}.`{EVENTS_TABLE}` (\n{_columns(_EVENT_COLUMNS)}\n)\n"
        "ENGINE = MergeTree\nORDER BY (alert_id, at)",
        f"CREATE TABLE IF NOT EXISTS {db}.`{SIGHTINGS_TABLE}` (\n{_columns(_SIGHTING_COLUMNS)}\n)\n"
        "ENGINE = AggregatingMergeTree\nORDER BY alert_id",
        f"CREATE TABLE IF NOT EXISTS {db}.`{DELIVERIES_TABLE}` (\n{_columns(DELIVERY_COLUMNS)}\n)\n"
        "ENGINE = ReplacingMergeTree(version)\nORDER BY delivery_id",
        f"""CREATE VIEW IF NOT EXISTS {db}.`{ALERTS_VIEW}` AS
SELECT
    r.alert_id AS alert_id, r.alert_type AS alert_type, r.severity AS severity,
    r.source AS source, r.fingerprint AS fingerprint, r.message AS message,
    r.context AS context, r.runbook AS runbook, r.organization_id AS organization_id,
    r.fleet_id AS fleet_id, r.vehicle_id AS vehicle_id, r.trip_id AS trip_id,
    r.dagster_run_id AS dagster_run_id,
    multiIf(e.resolved_at IS NOT NULL, 'resolved',
            e.acknowledged_at IS NOT NULL, 'acknowledged', 'triggered') AS status,
    r.triggered_at AS triggered_at,
    greatest(r.triggered_at, s.last_seen_at) AS last_seen_at,
    greatest(s.occurrences, 1) AS occurrences,
    e.acknowledged_at AS acknowledged_at, e.acknowledged_by AS acknowledged_by,
    e.resolved_at AS resolved_at, e.resolved_by AS resolved_by,
    e.resolution_note AS resolution_note
FROM {db}.`{RAISED_TABLE}` AS r FINAL
LEFT JOIN (
    SELECT
        alert_id,
        minIfOrNull(at, event = 'acknowledged') AS acknowledged_at,
        argMinIfOrNull(actor, at, event = 'acknowledged') AS acknowledged_by,
        minIfOrNull(at, event = 'resolved') AS resolved_at,
        argMinIfOrNull(actor, at, event = 'resolved') AS resolved_by,
        argMinIfOrNull(note, at, event = 'resolved') AS resolution_note
    FROM {db}.`{EVENTS_TABLE}`
    GROUP BY alert_id
) AS e ON e.alert_id = r.alert_id
LEFT JOIN (
    SELECT alert_id, sum(occurrences) AS occurrences, max(last_seen_at) AS last_seen_at
    FROM {db}.`{SIGHTINGS_TABLE}`
    GROUP BY alert_id
) AS s ON s.alert_id = r.alert_id""",
    ]


# Clients that already have the schema, per database: one round of DDL per client, not per call.
_READY: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()


def ensure_schema(client: Client, database: str = DATABASE) -> None:
    """Create the alert tables, the `alerts` view, the outbox and the audit log if missing."""
    done = _READY.setdefault(client, set())
    if database in done:
        return
    for statement in schema_statements(database):
        client.command(statement)
    done.add(database)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _now(now: datetime | None) -> datetime:
    # Milliseconds: the precision the tables keep, so what is returned equals what is read.
    at = _utc(now) if now is not None else datetime.now(UTC)
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


def _opt_utc(value: datetime | None) -> datetime | None:
    return None if value is None else _utc(value)


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _row_to_alert(row: Sequence[Any]) -> Alert:
    d = dict(zip(_VIEW_COLUMNS, row, strict=True))
    return Alert(
        alert_id=str(d["alert_id"]),
        alert_type=d["alert_type"],
        severity=d["severity"],
        source=d["source"],
        fingerprint=d["fingerprint"],
        message=d["message"],
        context=orjson.loads(d["context"] or "{}"),
        runbook=d["runbook"],
        organization_id=_opt_str(d["organization_id"]),
        fleet_id=_opt_str(d["fleet_id"]),
        vehicle_id=_opt_str(d["vehicle_id"]),
        trip_id=_opt_str(d["trip_id"]),
        dagster_run_id=d["dagster_run_id"],
        status=d["status"],
        triggered_at=_utc(d["triggered_at"]),
        last_seen_at=_utc(d["last_seen_at"]),
        occurrences=int(d["occurrences"]),
        acknowledged_at=_opt_utc(d["acknowledged_at"]),
        acknowledged_by=d["acknowledged_by"],
        resolved_at=_opt_utc(d["resolved_at"]),
        resolved_by=d["resolved_by"],
        resolution_note=d["resolution_note"] or None,
    )


def _select(
    client: Client, where: str, params: dict[str, Any], database: str, tail: str = ""
) -> list[Alert]:
    ensure_schema(client, database)
    result = client.query(
        f"SELECT {', '.join(_VIEW_COLUMNS)} FROM `{database}`.`{ALERTS_VIEW}` WHERE {where} {tail}",
        parameters=params,
    )
    return [_row_to_alert(r) for r in result.result_rows]


def list_alerts(
    client: Client,
    status: str = "open",
    *,
    alert_type: str | None = None,
    source: str | None = None,
    limit: int = 200,
    database: str = DATABASE,
) -> list[Alert]:
    """Alerts by status (`open` = triggered or acknowledged, `all`, or one status).

    Most severe first, then newest first.
    """
    where, params = ["1"], {"limit": limit}
    if status == "open":
        where.append("status IN {statuses:Array(String)}")
        params["statuses"] = list(OPEN_STATUSES)
    elif status in STATUSES:
        where.append("status = {status:String}")
        params["status"] = status
    elif status != "all":
        raise ValueError(f"status must be open, all or one of {STATUSES}, got {status!r}")
    if alert_type is not None:
        where.append("alert_type = {alert_type:String}")
        params["alert_type"] = alert_type
    if source is not None:
        where.append("source = {source:String}")
        params["source"] = source
    tail = (
        "ORDER BY indexOf(['critical', 'warning', 'info'], severity), triggered_at DESC, "
        "alert_id LIMIT {limit:UInt32}"
    )
    return _select(client, " AND ".join(where), params, database, tail)


def get_alert(client: Client, alert_id: str, *, database: str = DATABASE) -> Alert:
    """One alert by its id or a unique prefix of it (at least 6 characters, as `list` shows)."""
    key = alert_id.strip().lower()
    try:
        exact = str(uuid.UUID(key))
    except ValueError:
        exact = None
    if exact is not None:
        found = _select(client, "alert_id = {id:UUID}", {"id": exact}, database)
    else:
        if len(key) < MIN_PREFIX or any(c not in "0123456789abcdef-" for c in key):
            raise AlertNotFoundError(
                f"{alert_id!r} is not an alert id or an id prefix of at least {MIN_PREFIX} "
                "hex characters; `atlasmesh alerts list --status all` shows the ids"
            )
        found = _select(
            client, "startsWith(toString(alert_id), {p:String})", {"p": key}, database, "LIMIT 2"
        )
        if len(found) > 1:
            raise AlertNotFoundError(f"alert id prefix {alert_id!r} is ambiguous: give more of it")
    if not found:
        raise AlertNotFoundError(
            f"no alert {alert_id!r} in {database}; `atlasmesh alerts list --status all` shows ids"
        )
    return found[0]


def _open_by_fingerprint(client: Client, fp: str, database: str) -> Alert | None:
    found = _select(
        client,
        "fingerprint = {fp:String} AND status IN {statuses:Array(String)}",
        {"fp": fp, "statuses": list(OPEN_STATUSES)},
        database,
        "ORDER BY triggered_at LIMIT 1",
    )
    return found[0] if found else None


def _uuid(value: str | None) -> uuid.UUID | None:
    return None if value is None else uuid.UUID(value)


# Ids and fingerprints per query parameter: parameters travel in the URL, which HTTP
# servers cap (64 KiB in Python's http.server); 400 UUIDs are about 16 KB.
_CHUNK = 400


def _chunks(items: Sequence[str]) -> list[Sequence[str]]:
    return [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]


def _alerts_by_id(client: Client, ids: Sequence[str], database: str) -> dict[str, Alert]:
    found: dict[str, Alert] = {}
    for chunk in _chunks(list(dict.fromkeys(ids))):
        for alert in _select(
            client, "has({ids:Array(String)}, toString(alert_id))", {"ids": list(chunk)}, database
        ):
            found[alert.alert_id] = alert
    return found


def _enqueue(
    client: Client, alert_ids: Sequence[str], event: str, at: datetime, database: str
) -> None:
    """Put notifications into the outbox; deliver_pending sends them (due immediately)."""
    rows = [
        [
            uuid.uuid5(_ID_NAMESPACE, f"{alert_id}/{event}/webhook"),
            uuid.UUID(alert_id),
            event,
            "webhook",
            "pending",
            0,
            at,
            at,
            None,
            None,
            "",
            0,
        ]
        for alert_id in alert_ids
    ]
    if rows:
        client.insert(
            DELIVERIES_TABLE, rows, column_names=list(DELIVERY_COLUMNS), database=database
        )


def _log_event(alert: Alert, event: str, actor: str) -> None:
    """The log channel: one structured line per lifecycle event, nothing secret in it."""
    level = (
        _LOG_LEVEL.get(alert.severity, logging.WARNING) if event == "triggered" else logging.INFO
    )
    fields = {
        "event": event,
        "alert_id": alert.alert_id,
        "alert_type": alert.alert_type,
        "severity": alert.severity,
        "fingerprint": alert.fingerprint,
        "subject": alert.subject,
        "actor": actor,
        "runbook": alert.runbook,
        "dagster_run_id": alert.dagster_run_id,
    }
    log.log(
        level,
        "alert %s [%s] %s: %s (%s)",
        event,
        alert.severity,
        alert.alert_type,
        alert.message,
        alert.alert_id,
        extra={"alert": fields},
    )


def raise_alert(
    client: Client, spec: AlertSpec, *, now: datetime | None = None, database: str = DATABASE
) -> Alert:
    """Raise the alert of a problem, or count one more occurrence of it if it is already open.

    Deduplicates by fingerprint: while an alert with the spec's fingerprint is triggered or
    acknowledged, raising it again bumps its occurrences and last_seen_at and returns it. Once
    resolved, the next raise opens a new alert (a new episode of the same problem).
    """
    new, repeated = _raise_many(client, [spec], _now(now), database)
    return (new or repeated)[0]


def raise_alerts(
    client: Client,
    specs: Iterable[AlertSpec],
    *,
    now: datetime | None = None,
    database: str = DATABASE,
) -> list[Alert]:
    """`raise_alert` for many specs in a few batched statements; their alerts, in spec order.

    Unlike `reconcile`, nothing is auto-resolved: for evaluations that are not complete
    (e.g. the check evaluations that arrived since a sensor's cursor).
    """
    specs = list(specs)
    new, repeated = _raise_many(client, specs, _now(now), database)
    by_fingerprint = {a.fingerprint: a for a in [*new, *repeated]}
    return [by_fingerprint[s.fingerprint] for s in specs if s.fingerprint in by_fingerprint]


def _fingerprint_state(
    client: Client, fingerprints: Sequence[str], database: str
) -> dict[str, tuple[int, str | None]]:
    """Per fingerprint: how many of its alerts are resolved, and its open alert if any.

    One read gives both. The episode counts resolved alerts only: a raiser that reads just
    after another raiser's insert sees its alert open, one that reads just before computes
    the same id, and FINAL merges the two rows.
    """
    state: dict[str, tuple[int, str | None]] = {}
    for chunk in _chunks(list(fingerprints)):
        rows = client.query(
            "SELECT fingerprint, countIf(status = 'resolved'), countIf(status != 'resolved'), "
            "argMinIf(toString(alert_id), triggered_at, status != 'resolved') "
            f"FROM `{database}`.`{ALERTS_VIEW}` WHERE has({{fps:Array(String)}}, fingerprint) "
            "GROUP BY fingerprint",
            parameters={"fps": list(chunk)},
        ).result_rows
        for fp, resolved, open_count, open_id in rows:
            state[fp] = (int(resolved), open_id if open_count else None)
    return state


def _raise_many(
    client: Client, specs: Sequence[AlertSpec], at: datetime, database: str
) -> tuple[list[Alert], list[Alert]]:
    """Raise or repeat every spec with a few batched statements; the new and repeated alerts."""
    ensure_schema(client, database)
    first: dict[str, AlertSpec] = {}
    for spec in specs:
        first.setdefault(spec.fingerprint, spec)
    unique = list(first.values())
    state = _fingerprint_state(client, [s.fingerprint for s in unique], database)
    raised_rows: list[list[Any]] = []
    sightings: list[list[Any]] = []
    new_ids: list[str] = []
    repeated_ids: list[str] = []
    for spec in unique:
        episode, open_id = state.get(spec.fingerprint, (0, None))
        if open_id is not None:
            sightings.append([uuid.UUID(open_id), 1, at])
            repeated_ids.append(open_id)
            continue
        alert_id = uuid.uuid5(_ID_NAMESPACE, f"{spec.fingerprint}#{episode}")
        context = orjson.dumps(dict(spec.context), default=str, option=orjson.OPT_SORT_KEYS)
        raised_rows.append(
            [
                alert_id,
                spec.fingerprint,
                spec.source,
                spec.alert_type,
                spec.severity,
                spec.message,
                context.decode(),
                spec.runbook,
                _uuid(spec.organization_id),
                _uuid(spec.fleet_id),
                _uuid(spec.vehicle_id),
                _uuid(spec.trip_id),
                spec.dagster_run_id,
                at,
            ]
        )
        sightings.append([alert_id, 1, at])
        new_ids.append(str(alert_id))
    # Raised rows first: a crash after them leaves an alert without its notification only
    # until the next raise of the same problem, which finds it open and counts it.
    if raised_rows:
        client.insert(
            RAISED_TABLE, raised_rows, column_names=list(_RAISED_COLUMNS), database=database
        )
    if sightings:
        client.insert(
            SIGHTINGS_TABLE, sightings, column_names=list(_SIGHTING_COLUMNS), database=database
        )
    _enqueue(client, new_ids, "triggered", at, database)
    found = _alerts_by_id(client, new_ids + repeated_ids, database)
    new = [found[i] for i in new_ids if i in found]
    write_audits(
        client,
        [
            AuditRecord(
                actor=f"auto:{a.source}",
                action="alert.triggered",
                resource_type="alert",
                resource_id=a.alert_id,
                after={"status": "triggered", "severity": a.severity, "message": a.message},
                context={"alert_type": a.alert_type, "fingerprint": a.fingerprint},
                correlation_id=a.dagster_run_id,
                at=at,
            )
            for a in new
        ],
        database=database,
    )
    for a in new:
        _log_event(a, "triggered", f"auto:{a.source}")
    return new, [found[i] for i in repeated_ids if i in found]


def _transition(
    client: Client,
    alerts: Sequence[Alert],
    event: str,
    actor: str,
    note: str,
    at: datetime,
    database: str,
    extra: dict[str, Any] | None = None,
) -> list[Alert]:
    """Append a lifecycle event to each alert, audit it, queue its notification, log it."""
    if not actor or not actor.strip():
        raise AlertError(f"{event} needs a who (--by)")
    # The audit log and `alerts show` print who on one line: no control characters, and a
    # name, not a document.
    if len(actor) > MAX_ACTOR or any(not ch.isprintable() for ch in actor):
        raise AlertError(
            f"{event} needs a who (--by) of at most {MAX_ACTOR} printable characters on one line"
        )
    if not alerts:
        return []
    ids = [a.alert_id for a in alerts]
    client.insert(
        EVENTS_TABLE,
        [[uuid.UUID(i), event, at, actor, note] for i in ids],
        column_names=list(_EVENT_COLUMNS),
        database=database,
    )
    if event in NOTIFIED_EVENTS:
        _enqueue(client, ids, event, at, database)
    found = _alerts_by_id(client, ids, database)
    after = [found[i] for i in ids if i in found]
    before = {a.alert_id: a.status for a in alerts}
    write_audits(
        client,
        [
            AuditRecord(
                actor=actor,
                action=f"alert.{event}",
                resource_type="alert",
                resource_id=a.alert_id,
                before={"status": before[a.alert_id]},
                after={"status": a.status, f"{event}_by": actor, f"{event}_at": at.isoformat()},
                context={
                    "alert_type": a.alert_type,
                    "fingerprint": a.fingerprint,
                    "note": note,
                    **(extra or {}),
                },
                correlation_id=a.dagster_run_id,
                at=at,
            )
            for a in after
        ],
        database=database,
    )
    for a in after:
        _log_event(a, event, actor)
    return after


def _refuse_if_already(alert: Alert, *states: str) -> None:
    """A person cannot move an alert into a state it has already reached (or passed)."""
    if alert.status not in states:
        return
    who, when = alert.last_change
    raise AlertStateError(
        f"alert {alert.alert_id} was already {alert.status} by {who} at "
        f"{when:%Y-%m-%d %H:%M:%S} UTC"
    )


def acknowledge(
    client: Client,
    alert_id: str,
    who: str,
    *,
    note: str = "",
    now: datetime | None = None,
    database: str = DATABASE,
) -> Alert:
    """Someone is on it: move a triggered alert to acknowledged, recording who and when."""
    alert = get_alert(client, alert_id, database=database)
    _refuse_if_already(alert, "resolved", "acknowledged")
    return _transition(client, [alert], "acknowledged", who, note, _now(now), database)[0]


def resolve(
    client: Client,
    alert_id: str,
    who: str,
    *,
    note: str = "",
    now: datetime | None = None,
    database: str = DATABASE,
) -> Alert:
    """Close an open alert by hand, recording who and when (an unacknowledged one too)."""
    alert = get_alert(client, alert_id, database=database)
    _refuse_if_already(alert, "resolved")
    return _transition(client, [alert], "resolved", who, note, _now(now), database)[0]


def resolve_missing(
    client: Client,
    source: str,
    still_failing: Iterable[str],
    *,
    now: datetime | None = None,
    keep: Callable[[Alert], bool] | None = None,
    note: str = "condition no longer detected",
    database: str = DATABASE,
) -> list[Alert]:
    """Auto-resolve the open alerts of `source` whose fingerprint is not failing any more.

    `still_failing` is every fingerprint the source's latest evaluation found; an open alert
    of the source outside it has recovered. `keep` protects alerts the evaluation could not
    judge (e.g. a vehicle that sent nothing): they stay open. Returns the resolved alerts.
    """
    failing = set(still_failing)
    recovered = [
        alert
        for alert in list_alerts(client, "open", source=source, limit=1_000_000, database=database)
        if alert.fingerprint not in failing and not (keep is not None and keep(alert))
    ]
    return _transition(
        client, recovered, "resolved", f"auto:{source}", note, _now(now), database, {"auto": True}
    )


auto_resolve = resolve_missing


def resolve_fingerprint(
    client: Client,
    fingerprint: str,
    *,
    who: str,
    note: str = "condition no longer detected",
    now: datetime | None = None,
    database: str = DATABASE,
) -> Alert | None:
    """Resolve the open alert of one problem (e.g. a gate passing again); None if none is open."""
    ensure_schema(client, database)
    alert = _open_by_fingerprint(client, fingerprint, database)
    if alert is None:
        return None
    return _transition(client, [alert], "resolved", who, note, _now(now), database, {"auto": True})[
        0
    ]


@dataclass(frozen=True)
class Reconciliation:
    """What one evaluation of a source changed in the store."""

    raised: list[Alert]
    repeated: list[Alert]
    resolved: list[Alert]


def reconcile(
    client: Client,
    source: str,
    specs: Iterable[AlertSpec],
    *,
    now: datetime | None = None,
    keep: Callable[[Alert], bool] | None = None,
    database: str = DATABASE,
) -> Reconciliation:
    """Apply one complete evaluation of a source: raise or repeat what fails, resolve the rest."""
    at = _now(now)
    specs = list(specs)
    for spec in specs:
        if spec.source != source:
            raise ValueError(f"spec of source {spec.source!r} given to reconcile {source!r}")
    raised, repeated = _raise_many(client, specs, at, database)
    resolved = resolve_missing(
        client, source, {s.fingerprint for s in specs}, now=at, keep=keep, database=database
    )
    return Reconciliation(raised=raised, repeated=repeated, resolved=resolved)
