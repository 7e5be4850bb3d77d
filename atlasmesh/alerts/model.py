"""What an alert is: its types, severities, lifecycle, fingerprint and the request to raise one."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Severity = Literal["critical", "warning", "info"]
Status = Literal["triggered", "acknowledged", "resolved"]

SEVERITIES: tuple[str, ...] = ("critical", "warning", "info")
# The seed's ALERT lifecycle: triggered -> acknowledged -> resolved; resolving an alert that
# nobody acknowledged (auto-resolve, or on-call fixing it straight away) skips the middle.
STATUSES: tuple[str, ...] = ("triggered", "acknowledged", "resolved")
OPEN_STATUSES: tuple[str, ...] = ("triggered", "acknowledged")
RUNBOOK_DIR = "docs/runbooks"


@dataclass(frozen=True)
class AlertType:
    """A kind of alert the platform raises, with the source that owns its auto-resolution."""

    name: str
    title: str
    source: str
    severity: Severity

    @property
    def runbook(self) -> str:
        """Repository path of what on-call does about it."""
        return f"{RUNBOOK_DIR}/{self.name}.md"


# Every type has a runbook under docs/runbooks/<name>.md (a test checks it). `source` names
# the evaluator that raises the type and is the only one allowed to auto-resolve it.
ALERT_TYPES: dict[str, AlertType] = {
    t.name: t
    for t in (
        AlertType("quality_gate_failed", "Quality gate failed", "quality_gates", "critical"),
        AlertType("run_failed", "Pipeline run failed", "runs", "critical"),
        AlertType("telemetry_stale", "Fleet telemetry not arriving", "telemetry_rules", "critical"),
        AlertType("critical_dtc", "Critical diagnostic code", "telemetry_rules", "critical"),
        AlertType("battery_critical", "Battery critically low", "telemetry_rules", "critical"),
        AlertType("freshness_missed", "Data freshness missed", "freshness", "warning"),
    )
}  # fmt: skip


class AlertError(RuntimeError):
    """An alert operation that cannot be done; the message says why and what to do."""


class AlertNotFoundError(AlertError):
    """No alert has this id (or id prefix)."""


class AlertStateError(AlertError):
    """The alert is not in a state that allows the operation (e.g. acknowledging a resolved one)."""


def fingerprint(alert_type: str, *keys: object) -> str:
    """A stable identity of one problem: the same type and keys give the same fingerprint.

    Keys say what is wrong where (a vehicle and a code, a fleet, a table, an asset check and
    partition), never when, so a problem that persists across runs keeps one fingerprint.
    """
    text = "\x1f".join([alert_type, *("" if k is None else str(k) for k in keys)])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _uuid_or_none(value: object, name: str) -> str | None:
    if value is None or value == "":
        return None
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise ValueError(f"{name} must be a UUID, got {value!r}") from None


@dataclass(frozen=True)
class AlertSpec:
    """A request to raise an alert: what is wrong, how bad, and the problem's fingerprint.

    Raising the same fingerprint again while its alert is open counts an occurrence instead
    of opening a second alert. `source` defaults to the type's owner; `context` must be JSON.
    """

    alert_type: str
    message: str
    fingerprint: str
    severity: Severity | None = None
    source: str = ""
    context: Mapping[str, Any] = field(default_factory=dict)
    organization_id: str | None = None
    fleet_id: str | None = None
    vehicle_id: str | None = None
    trip_id: str | None = None
    dagster_run_id: str = ""

    def __post_init__(self) -> None:
        kind = ALERT_TYPES.get(self.alert_type)
        if kind is None:
            raise ValueError(
                f"unknown alert type {self.alert_type!r}; known: {', '.join(ALERT_TYPES)} "
                "(a new type needs an entry in ALERT_TYPES and a runbook)"
            )
        if self.severity is None:
            object.__setattr__(self, "severity", kind.severity)
        elif self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")
        if not self.source:
            object.__setattr__(self, "source", kind.source)
        if not self.fingerprint:
            raise ValueError("an alert needs a fingerprint (see atlasmesh.alerts.fingerprint)")
        for name in ("organization_id", "fleet_id", "vehicle_id", "trip_id"):
            object.__setattr__(self, name, _uuid_or_none(getattr(self, name), name))

    @property
    def runbook(self) -> str:
        """Repository path of the runbook of this alert's type."""
        return ALERT_TYPES[self.alert_type].runbook


@dataclass(frozen=True)
class Alert:
    """One alert as the store holds it now (the `ops.alerts` view)."""

    alert_id: str
    alert_type: str
    severity: str
    source: str
    fingerprint: str
    message: str
    context: dict[str, Any]
    runbook: str
    organization_id: str | None
    fleet_id: str | None
    vehicle_id: str | None
    trip_id: str | None
    dagster_run_id: str
    status: str
    triggered_at: datetime
    last_seen_at: datetime
    occurrences: int
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    resolution_note: str | None

    @property
    def is_open(self) -> bool:
        """Triggered or acknowledged: someone still has to act, or the problem persists."""
        return self.status in OPEN_STATUSES

    @property
    def last_change(self) -> tuple[str | None, datetime | None]:
        """Who moved the alert into its current state by hand, and when (resolved, else acked)."""
        if self.status == "resolved":
            return self.resolved_by, self.resolved_at
        return self.acknowledged_by, self.acknowledged_at

    @property
    def title(self) -> str:
        """Human name of the alert's type."""
        kind = ALERT_TYPES.get(self.alert_type)
        return kind.title if kind else self.alert_type

    @property
    def subject(self) -> str:
        """What the alert is about, for listings: a vehicle, a fleet, or the context's target."""
        if self.vehicle_id:
            return f"vehicle {self.vehicle_id}"
        if self.fleet_id:
            return f"fleet {self.fleet_id}"
        target = self.context.get("target") or self.context.get("asset_key") or ""
        return str(target)
