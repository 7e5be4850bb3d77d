"""Alert rules: operational telemetry rules and freshness computed on ClickHouse, and alert
specs for failed quality gates and runs (raised by the orchestration layer).

Every rule returns the complete list of what fails now, as AlertSpecs with fingerprints that
depend on what and where (rule, vehicle and code, fleet, table), never on when: feeding
each evaluation to `store.reconcile` keeps a persisting condition one alert and resolves it
once the condition is gone.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from atlasmesh.alerts.model import Alert, AlertSpec, fingerprint
from atlasmesh.alerts.store import DATABASE, Reconciliation, reconcile
from atlasmesh.telemetry.policy import PERCENT_RANGE

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

TELEMETRY_DATABASE = "atlasmesh_analytics"
FLEET_CORE_DATABASE = "fleet_core"
TELEMETRY_TABLE = "vehicle_telemetry"
TELEMETRY_SOURCE = "telemetry_rules"
FRESHNESS_SOURCE = "freshness"

# The Fleet OS warns at 15% and dispatch keeps a 20% reserve (see the simulator's
# ops.py). Below 10% the catalogue's EVs have about 20-45 km left (6.8 kWh at 30 kWh/100 km
# for an E-Transit, 32 kWh at 120 kWh/100 km for a bus): the vehicle must go to a charger
# now or it strands, so the platform pages rather than warns.
BATTERY_CRITICAL_PERCENT = 10.0
# Rules judge each vehicle on its own latest telemetry within this look-back: the hot path
# publishes whole event hours, so "the last hour before now" would often be empty and would
# resolve alerts only because data is late. A vehicle silent longer than this is not
# judged and its alerts stay open (telemetry_stale covers silence of a whole fleet).
LOOKBACK = timedelta(hours=24)
# A degrading component reports its code intermittently before the code becomes steady
# (the simulator's dtc_lo..dtc_hi band), so a short window would flap between raised and
# resolved. Three hours of a vehicle's latest telemetry are ~360 samples at 30 s: a code
# absent from all of them has stopped.
DTC_WINDOW = timedelta(hours=3)
# Event hours are published after the hour closes plus the staging and publish lag, so in
# steady state the newest row is up to ~1.5 h old. Two hours without any row from any
# vehicle of a fleet means at least one whole hour failed to arrive.
STALE_AFTER = timedelta(hours=2)

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@functools.cache
def critical_dtcs() -> frozenset[str]:
    """Diagnostic codes of components whose failure strands the vehicle (simulator catalogue).

    Imported lazily: the simulator package pulls in polars, which sensors should not pay
    for at load time.
    """
    from atlasmesh.simulator.catalog import COMPONENTS

    return frozenset(code for c in COMPONENTS if c.critical for code in (c.dtc_ev, c.dtc_ice))


@functools.cache
def _dtc_descriptions() -> dict[str, str]:
    from atlasmesh.simulator.catalog import COMPONENTS

    return {code: c.dtc_description for c in COMPONENTS for code in (c.dtc_ev, c.dtc_ice)}


def _ident(name: str, what: str) -> str:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"{what} {name!r} is not a plain identifier")
    return f"`{name}`"


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else _utc(value).isoformat()


def _ago(now: datetime, then: datetime | None) -> str:
    if then is None:
        return "never"
    minutes = int((now - _utc(then)).total_seconds() // 60)
    return (
        f"{minutes // 60} h {minutes % 60:02d} min ago" if minutes >= 60 else f"{minutes} min ago"
    )


_TS = "DateTime64(3, 'UTC')"
# A battery value outside 0-100 % (or NaN) is a broken sensor, not a charge level: it must
# neither page as "battery at nan%" nor hide the vehicle's last real reading. Validation
# refuses such values, but the hot path holds a loaded hour before its gate judges it.
_BATTERY_READ = (
    "battery_level_percent IS NOT NULL AND isFinite(battery_level_percent) "
    f"AND battery_level_percent >= {PERCENT_RANGE[0]!r} "
    f"AND battery_level_percent <= {PERCENT_RANGE[1]!r}"
)


@dataclass(frozen=True)
class _Vehicle:
    """A vehicle's latest telemetry within the look-back."""

    last_recorded: datetime
    last_ingested: datetime | None
    battery: float | None
    battery_at: datetime | None


@dataclass(frozen=True)
class _Member:
    """A vehicle of fleet-core with its fleet."""

    fleet_id: str
    organization_id: str | None
    fleet_name: str
    fleet_active: bool
    asset_tag: str
    created_at: datetime


def _vehicle_state(
    client: Client, telemetry: str, now: datetime, since: datetime
) -> dict[str, _Vehicle]:
    """One scan of the look-back: per vehicle, its latest times and battery reading."""
    rows = client.query(
        f"""SELECT
    toString(vehicle_id),
    max(recorded_at),
    maxIfOrNull(ingested_at, ingested_at <= {{now:{_TS}}}),
    argMaxIf(battery_level_percent, recorded_at, {_BATTERY_READ}),
    maxIfOrNull(recorded_at, {_BATTERY_READ})
FROM {telemetry}
WHERE recorded_at > {{since:{_TS}}} AND recorded_at <= {{now:{_TS}}}
GROUP BY vehicle_id""",
        parameters={"now": now, "since": since},
    ).result_rows
    return {
        r[0]: _Vehicle(
            last_recorded=_utc(r[1]),
            last_ingested=None if r[2] is None else _utc(r[2]),
            battery=None if r[3] is None else float(r[3]),
            battery_at=None if r[4] is None else _utc(r[4]),
        )
        for r in rows
    }


def _code_reports(
    client: Client, telemetry: str, now: datetime, since: datetime, codes: Collection[str]
) -> list[tuple[str, str, int, datetime, datetime]]:
    """Per vehicle and critical code in the look-back: reports, first and last report."""
    rows = client.query(
        f"""SELECT toString(vehicle_id), code, count(), min(recorded_at), max(recorded_at)
FROM {telemetry}
ARRAY JOIN arrayFilter(c -> has({{codes:Array(String)}}, c), diagnostic_codes) AS code
WHERE recorded_at > {{since:{_TS}}} AND recorded_at <= {{now:{_TS}}}
  AND hasAny(diagnostic_codes, {{codes:Array(String)}})
GROUP BY vehicle_id, code
ORDER BY vehicle_id, code""",
        parameters={"now": now, "since": since, "codes": sorted(codes)},
    ).result_rows
    return [(r[0], r[1], int(r[2]), _utc(r[3]), _utc(r[4])) for r in rows]


def _members(client: Client, fleet_core: str) -> dict[str, _Member]:
    """Every current vehicle with its fleet (fleet-core is small: no look-back needed)."""
    rows = client.query(
        f"""SELECT toString(v.vehicle_id), toString(v.fleet_id), toString(f.organization_id),
       f.name, ifNull(f.status, 'active') = 'active', v.asset_tag, v.created_at
FROM {fleet_core}.`vehicles_current` AS v
INNER JOIN {fleet_core}.`fleets_current` AS f ON f.fleet_id = v.fleet_id"""
    ).result_rows
    return {
        r[0]: _Member(
            fleet_id=r[1],
            organization_id=r[2],
            fleet_name=r[3],
            fleet_active=bool(r[4]),
            asset_tag=r[5],
            created_at=_utc(r[6]),
        )
        for r in rows
    }


@dataclass(frozen=True)
class TelemetryEvaluation:
    """One evaluation of the telemetry rules: what fails, and which vehicles could be judged."""

    specs: list[AlertSpec]
    vehicles_judged: frozenset[str]

    def keep(self, alert: Alert) -> bool:
        """True for an open alert of a vehicle that sent nothing in the look-back: not judged."""
        return alert.vehicle_id is not None and alert.vehicle_id not in self.vehicles_judged


def evaluate_telemetry(
    client: Client,
    now: datetime,
    *,
    telemetry_database: str = TELEMETRY_DATABASE,
    fleet_core_database: str = FLEET_CORE_DATABASE,
    lookback: timedelta = LOOKBACK,
    dtc_window: timedelta = DTC_WINDOW,
    stale_after: timedelta = STALE_AFTER,
    battery_critical_percent: float = BATTERY_CRITICAL_PERCENT,
    codes: Collection[str] | None = None,
    dagster_run_id: str = "",
) -> TelemetryEvaluation:
    """Evaluate critical DTCs, critically low batteries and stale fleets as of `now`.

    Three queries: one scan of the look-back for every vehicle's latest state, one for the
    rows carrying a critical code, one of fleet-core's (small) vehicle and fleet tables.
    """
    now = _utc(now)
    since = now - max(lookback, dtc_window)
    telemetry = f"{_ident(telemetry_database, 'database')}.`{TELEMETRY_TABLE}`"
    codes = critical_dtcs() if codes is None else frozenset(codes)
    state = _vehicle_state(client, telemetry, now, since)
    reports = _code_reports(client, telemetry, now, since, codes) if codes else []
    members = _members(client, _ident(fleet_core_database, "database"))
    specs = [
        *_dtc_specs(reports, state, members, now, dtc_window, dagster_run_id),
        *_battery_specs(state, members, now, battery_critical_percent, dagster_run_id),
        *_stale_specs(state, members, now, stale_after, lookback, dagster_run_id),
    ]
    return TelemetryEvaluation(specs=specs, vehicles_judged=frozenset(state))


def _owner(members: Mapping[str, _Member], vehicle: str) -> dict[str, Any]:
    m = members.get(vehicle)
    if m is None:
        return {"vehicle_id": vehicle}
    return {"vehicle_id": vehicle, "fleet_id": m.fleet_id, "organization_id": m.organization_id}


def _dtc_specs(
    reports: Sequence[tuple[str, str, int, datetime, datetime]],
    state: Mapping[str, _Vehicle],
    members: Mapping[str, _Member],
    now: datetime,
    window: timedelta,
    run_id: str,
) -> list[AlertSpec]:
    """A code counts while it was reported within its vehicle's own latest `window` of data."""
    descriptions = _dtc_descriptions()
    specs = []
    for vehicle, code, count, first_at, last_at in reports:
        if last_at <= state[vehicle].last_recorded - window:
            continue
        tag = members[vehicle].asset_tag if vehicle in members else vehicle
        what = descriptions.get(code, "critical diagnostic code")
        specs.append(
            AlertSpec(
                alert_type="critical_dtc",
                message=(
                    f"Vehicle {tag} reports {code} ({what}): {count} report(s) since "
                    f"{_ago(now, first_at)}, last {_ago(now, last_at)}"
                ),
                fingerprint=fingerprint("critical_dtc", vehicle, code),
                dagster_run_id=run_id,
                context={
                    "dtc": code,
                    "description": what,
                    "reports_in_lookback": count,
                    "first_reported_at": _iso(first_at),
                    "last_reported_at": _iso(last_at),
                    "asset_tag": tag,
                    "window_hours": window.total_seconds() / 3600,
                },
                **_owner(members, vehicle),
            )
        )
    return specs


def _battery_specs(
    state: Mapping[str, _Vehicle],
    members: Mapping[str, _Member],
    now: datetime,
    threshold: float,
    run_id: str,
) -> list[AlertSpec]:
    """The latest battery reading counts, not the lowest: a vehicle that charged has recovered."""
    specs = []
    for vehicle, v in sorted(state.items()):
        if v.battery is None or v.battery >= threshold:
            continue
        tag = members[vehicle].asset_tag if vehicle in members else vehicle
        specs.append(
            AlertSpec(
                alert_type="battery_critical",
                message=(
                    f"Vehicle {tag} battery at {v.battery:.1f}% (critical below {threshold:g}%), "
                    f"read {_ago(now, v.battery_at)}"
                ),
                fingerprint=fingerprint("battery_critical", vehicle),
                dagster_run_id=run_id,
                context={
                    "battery_level_percent": round(v.battery, 2),
                    "threshold_percent": threshold,
                    "read_at": _iso(v.battery_at),
                    "asset_tag": tag,
                },
                **_owner(members, vehicle),
            )
        )
    return specs


def _stale_specs(
    state: Mapping[str, _Vehicle],
    members: Mapping[str, _Member],
    now: datetime,
    stale_after: timedelta,
    lookback: timedelta,
    run_id: str,
) -> list[AlertSpec]:
    """Active fleets none of whose vehicles (older than `stale_after`) delivered recently."""
    cutoff = now - stale_after
    fleets: dict[str, list[str]] = {}
    for vehicle, m in members.items():
        # A vehicle added less than `stale_after` ago cannot be late yet.
        if m.fleet_active and m.created_at <= cutoff:
            fleets.setdefault(m.fleet_id, []).append(vehicle)
    specs = []
    for fleet_id, vehicles in sorted(fleets.items()):
        arrivals = [state[v].last_ingested for v in vehicles if v in state]
        last = max((a for a in arrivals if a is not None), default=None)
        if last is not None and last > cutoff:
            continue
        m = members[vehicles[0]]
        last_recorded = max((state[v].last_recorded for v in vehicles if v in state), default=None)
        since = (
            f"last arrival {_ago(now, last)}"
            if last is not None
            else f"no arrival in the last {lookback.total_seconds() / 3600:g} h"
        )
        specs.append(
            AlertSpec(
                alert_type="telemetry_stale",
                message=(
                    f"No telemetry from fleet {m.fleet_name} ({len(vehicles)} vehicles) for more "
                    f"than {stale_after.total_seconds() / 3600:g} h: {since}"
                ),
                fingerprint=fingerprint("telemetry_stale", fleet_id),
                fleet_id=fleet_id,
                organization_id=m.organization_id,
                dagster_run_id=run_id,
                context={
                    "fleet_name": m.fleet_name,
                    "vehicles": len(vehicles),
                    "vehicles_reporting_in_lookback": sum(v in state for v in vehicles),
                    "last_ingested_at": _iso(last),
                    "last_recorded_at": _iso(last_recorded),
                    "stale_after_hours": stale_after.total_seconds() / 3600,
                    "lookback_hours": lookback.total_seconds() / 3600,
                },
            )
        )
    return specs


def evaluate_telemetry_rules(client: Client, now: datetime, **options: Any) -> list[AlertSpec]:
    """What the telemetry rules find failing as of `now` (options as `evaluate_telemetry`)."""
    return evaluate_telemetry(client, now, **options).specs


def check_telemetry_rules(
    client: Client, now: datetime, *, database: str = DATABASE, **options: Any
) -> Reconciliation:
    """Evaluate the telemetry rules and apply them to the store: raise, repeat, auto-resolve.

    Alerts of vehicles that sent nothing in the look-back stay open: silence is not recovery.
    """
    evaluation = evaluate_telemetry(client, now, **options)
    return reconcile(
        client, TELEMETRY_SOURCE, evaluation.specs, now=now, keep=evaluation.keep, database=database
    )


@dataclass(frozen=True)
class FreshnessTarget:
    """A table that must hold recent data: its newest `column` value at most `max_age` old."""

    name: str
    database: str
    table: str
    column: str
    max_age: timedelta


def telemetry_freshness_target(
    database: str = TELEMETRY_DATABASE, max_age: timedelta = STALE_AFTER
) -> FreshnessTarget:
    """The hot-path telemetry table, judged by arrival time (the pipeline stalled, not a fleet)."""
    return FreshnessTarget(
        name=f"{database}.{TELEMETRY_TABLE}",
        database=database,
        table=TELEMETRY_TABLE,
        column="ingested_at",
        max_age=max_age,
    )


_UNKNOWN_OBJECT = {60, 81}  # UNKNOWN_TABLE, UNKNOWN_DATABASE


def _newest(client: Client, target: FreshnessTarget) -> tuple[datetime | None, str | None]:
    """The newest value of the target's column, or why it could not be read."""
    from clickhouse_connect.driver.exceptions import DatabaseError

    sql = (
        f"SELECT toDateTime64(max({_ident(target.column, 'column')}), 3, 'UTC'), count() "
        f"FROM {_ident(target.database, 'database')}.{_ident(target.table, 'table')}"
    )
    try:
        newest, rows = client.query(sql).result_rows[0]
    except DatabaseError as exc:
        code = getattr(exc, "code", None)
        text = str(exc)
        if code in _UNKNOWN_OBJECT or "UNKNOWN_TABLE" in text or "UNKNOWN_DATABASE" in text:
            return None, "the table does not exist (never built?)"
        raise
    if not rows:
        return None, "the table is empty"
    return _utc(newest), None


def evaluate_freshness(
    client: Client,
    now: datetime,
    targets: Sequence[FreshnessTarget],
    *,
    dagster_run_id: str = "",
    severity: str | None = None,
) -> list[AlertSpec]:
    """Targets whose newest data is older than their max age (or missing) as of `now`."""
    now = _utc(now)
    specs: list[AlertSpec] = []
    for target in targets:
        newest, problem = _newest(client, target)
        age = None if newest is None else now - newest
        if problem is None and age is not None and age <= target.max_age:
            continue
        limit = f"{target.max_age.total_seconds() / 3600:g} h"
        detail = problem or f"newest {target.column} is {_ago(now, newest)} (limit {limit})"
        specs.append(
            AlertSpec(
                alert_type="freshness_missed",
                severity=severity,  # type: ignore[arg-type]
                message=f"{target.name} is not fresh: {detail}",
                fingerprint=fingerprint("freshness_missed", target.name),
                dagster_run_id=dagster_run_id,
                context={
                    "target": target.name,
                    "table": f"{target.database}.{target.table}",
                    "column": target.column,
                    "newest": _iso(newest),
                    "age_hours": None if age is None else round(age.total_seconds() / 3600, 2),
                    "max_age_hours": target.max_age.total_seconds() / 3600,
                    "problem": problem,
                },
            )
        )
    return specs


def check_freshness(
    client: Client,
    now: datetime,
    targets: Sequence[FreshnessTarget],
    *,
    database: str = DATABASE,
    dagster_run_id: str = "",
) -> Reconciliation:
    """Evaluate the targets and apply the result to the store (other targets keep their alerts)."""
    names = {t.name for t in targets}
    specs = evaluate_freshness(client, now, targets, dagster_run_id=dagster_run_id)
    return reconcile(
        client,
        FRESHNESS_SOURCE,
        specs,
        now=now,
        keep=lambda a: a.context.get("target") not in names,
        database=database,
    )


def quality_gate_failed(
    *,
    asset_key: str,
    check_name: str,
    partition: str | None = None,
    description: str = "",
    dagster_run_id: str = "",
    blocking: bool = True,
    context: Mapping[str, Any] | None = None,
) -> AlertSpec:
    """The alert of a failed asset check: one per (asset, check, partition), whatever the runs.

    Resolve it with `store.resolve_fingerprint(client, spec.fingerprint, who=...)` when the
    same check passes on the same partition.
    """
    where = f"{asset_key}" + (f" partition {partition}" if partition else "")
    verb = "blocked downstream" if blocking else "warned"
    return AlertSpec(
        alert_type="quality_gate_failed",
        severity="critical" if blocking else "warning",
        message=f"Check {check_name} failed on {where} ({verb})"
        + (f": {description}" if description else ""),
        fingerprint=fingerprint("quality_gate_failed", asset_key, check_name, partition),
        dagster_run_id=dagster_run_id,
        context={
            "asset_key": asset_key,
            "check_name": check_name,
            "partition": partition,
            "blocking": blocking,
            **(context or {}),
        },
    )


def run_failed(
    *,
    job_name: str,
    dagster_run_id: str,
    error: str = "",
    partition: str | None = None,
    context: Mapping[str, Any] | None = None,
) -> AlertSpec:
    """The alert of a failed run: one per (job, partition) until a run of it succeeds again."""
    where = job_name + (f" partition {partition}" if partition else "")
    first_line = error.strip().splitlines()[0][:300] if error.strip() else ""
    return AlertSpec(
        alert_type="run_failed",
        message=f"Run of {where} failed" + (f": {first_line}" if first_line else ""),
        fingerprint=fingerprint("run_failed", job_name, partition),
        dagster_run_id=dagster_run_id,
        context={"job_name": job_name, "partition": partition, **(context or {})},
    )
