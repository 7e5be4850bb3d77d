"""The platform's audit log in the warehouse (`ops.audit_log`): who did what to what, when."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

AUDIT_TABLE = "audit_log"
# The seed's AUDIT_LOG entity, with `actor` for the seed's user_id: actors here are people
# (`--by`, the OS user) and platform components (`auto:<source>`), not fleet-core users.
AUDIT_COLUMNS: dict[str, str] = {
    "audit_id": "UUID",
    "performed_at": "DateTime64(3, 'UTC')",
    "actor": "String",
    "action": "LowCardinality(String)",
    "resource_type": "LowCardinality(String)",
    "resource_id": "String",
    "before_state": "String",
    "after_state": "String",
    "context": "String",
    "correlation_id": "String",
}
# Audit trails are Restricted data: kept 10 years (seed §8.1).
AUDIT_RETENTION_YEARS = 10


def audit_ddl(database: str) -> list[str]:
    """Statements creating the audit table (idempotent)."""
    columns = ",\n".join(f"    `{name}` {kind}" for name, kind in AUDIT_COLUMNS.items())
    return [
        f"CREATE DATABASE IF NOT EXISTS `{database}`",
        f"CREATE TABLE IF NOT EXISTS `{database}`.`{AUDIT_TABLE}` (\n{columns}\n)\n"
        "ENGINE = MergeTree\n"
        "PARTITION BY toYYYYMM(performed_at)\n"
        # Questions are "what happened to this object" and "what happened in this period".
        "ORDER BY (resource_type, resource_id, performed_at)\n"
        f"TTL toDateTime(performed_at) + INTERVAL {AUDIT_RETENTION_YEARS} YEAR",
    ]


@dataclass(frozen=True)
class AuditEntry:
    """One audited action."""

    audit_id: str
    performed_at: datetime
    actor: str
    action: str
    resource_type: str
    resource_id: str
    before_state: dict[str, Any]
    after_state: dict[str, Any]
    context: dict[str, Any]
    correlation_id: str


def _json(value: Mapping[str, Any] | None) -> str:
    return orjson.dumps(value or {}, default=str, option=orjson.OPT_SORT_KEYS).decode()


@dataclass(frozen=True)
class AuditRecord:
    """An action to audit (`write_audits` appends many in one insert)."""

    actor: str
    action: str
    resource_type: str
    resource_id: str
    before: Mapping[str, Any] | None = None
    after: Mapping[str, Any] | None = None
    context: Mapping[str, Any] | None = None
    correlation_id: str = ""
    at: datetime | None = None


def write_audits(
    client: Client, records: Sequence[AuditRecord], *, database: str = "ops"
) -> list[str]:
    """Append rows to the audit log in one insert and return their ids (the table must exist)."""
    rows, ids = [], []
    for r in records:
        if not r.actor:
            raise ValueError(f"audited action {r.action!r} needs an actor")
        audit_id = uuid.uuid4()
        ids.append(str(audit_id))
        rows.append(
            [
                audit_id,
                r.at or datetime.now(UTC),
                r.actor,
                r.action,
                r.resource_type,
                r.resource_id,
                _json(r.before),
                _json(r.after),
                _json(r.context),
                r.correlation_id,
            ]
        )
    if rows:
        client.insert(AUDIT_TABLE, rows, column_names=list(AUDIT_COLUMNS), database=database)
    return ids


def write_audit(client: Client, *, database: str = "ops", **record: Any) -> str:
    """Append one row to the audit log (fields as AuditRecord) and return its id."""
    return write_audits(client, [AuditRecord(**record)], database=database)[0]


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def read_audit(
    client: Client,
    *,
    resource_type: str | None = None,
    resource_id: str | None = None,
    database: str = "ops",
    limit: int = 1000,
) -> list[AuditEntry]:
    """Audit rows, oldest first, optionally of one resource type and id."""
    where, params = ["1"], {"limit": limit}
    if resource_type is not None:
        where.append("resource_type = {rtype:String}")
        params["rtype"] = resource_type
    if resource_id is not None:
        where.append("resource_id = {rid:String}")
        params["rid"] = resource_id
    result = client.query(
        f"SELECT {', '.join(AUDIT_COLUMNS)} FROM `{database}`.`{AUDIT_TABLE}` "
        f"WHERE {' AND '.join(where)} ORDER BY performed_at, audit_id LIMIT {{limit:UInt32}}",
        parameters=params,
    )
    return [
        AuditEntry(
            audit_id=str(r[0]),
            performed_at=_utc(r[1]),
            actor=r[2],
            action=r[3],
            resource_type=r[4],
            resource_id=r[5],
            before_state=orjson.loads(r[6] or "{}"),
            after_state=orjson.loads(r[7] or "{}"),
            context=orjson.loads(r[8] or "{}"),
            correlation_id=r[9],
        )
        for r in result.result_rows
    ]
