"""The Fleet OS at event level: dispatch with policy decisions, trips, charging, failures, repairs.

Each vehicle is planned as a timeline of segments (driving a trip, idling, charging,
parked, in maintenance, broken down). Telemetry samples are later read off these segments
in bulk. Planning is sequential per vehicle with its own random stream, so a vehicle's
history does not depend on how the period is cut into blocks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from atlasmesh.simulator import health
from atlasmesh.simulator.catalog import (
    CITIES,
    COMPONENTS,
    FIRMWARE_V1,
    FIRMWARE_V2,
    LABOR_RATE,
    STATUS_NAMES,
    Kind,
)
from atlasmesh.simulator.kinematics import distance_at, locate, trip_shape
from atlasmesh.simulator.world import (
    STREAM_VEHICLE,
    Route,
    Vehicle,
    World,
    new_id,
    rng_for,
)

N_COMP = len(COMPONENTS)
# Segment layout: one row of floats per segment (see SEG_* indices).
(SEG_T0, SEG_T1, SEG_KIND, SEG_ROUTE, SEG_DIR, SEG_DIST, SEG_DUR, SEG_STOPS, SEG_AMP, SEG_E0,
 SEG_ERATE, SEG_OD0, SEG_LOAD, SEG_LAT, SEG_LON, SEG_HEADING, SEG_ROUGH) = range(17)  # fmt: skip
SEG_H0 = 17
SEG_HR = SEG_H0 + N_COMP
SEG_WIDTH = SEG_HR + N_COMP

RESERVE_PERCENT = 20.0
LOW_ENERGY_PERCENT = 15.0
WORKSHOP_HOURS = (8, 16)


@dataclass
class Entry:
    """A fleet-core row as the Fleet OS will have written it, final after `final_s`."""

    table: str
    row: dict[str, Any]
    final_s: float


class Ledger:
    """Fleet-core rows produced by the planners, released to the database as they settle."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []

    def add(self, table: str, row: dict[str, Any], final_s: float) -> Entry:
        """Record a row; `final_s` is when its lifecycle ends (it may change until then)."""
        entry = Entry(table, row, final_s)
        self.entries.append(entry)
        return entry

    def release(
        self, as_of: datetime, as_of_s: float, final: bool = False, since_s: float = 0.0
    ) -> dict[str, list[dict[str, Any]]]:
        """Rows as seen at `as_of`, per table; settled rows are dropped from the ledger.

        Rows that settled before `since_s` are dropped unwritten: an earlier window of the
        same history wrote them.
        """
        out: dict[str, list[dict[str, Any]]] = {}
        keep: list[Entry] = []
        for entry in self.entries:
            if entry.final_s > as_of_s and not final:
                keep.append(entry)
            if entry.final_s < since_s:
                continue
            row = clip_row(entry.table, entry.row, as_of)
            if row is not None:
                out.setdefault(entry.table, []).append(row)
        self.entries = keep
        return out


def _before(value: datetime | None, as_of: datetime) -> bool:
    return value is not None and value <= as_of


def clip_row(table: str, row: dict[str, Any], as_of: datetime) -> dict[str, Any] | None:
    """The row as the database holds it at `as_of` (later lifecycle steps not yet happened)."""
    if row["created_at"] > as_of:
        return None
    out = dict(row)
    stamps = [row["created_at"]]
    if table == "trips":
        if row["status"] == "cancelled":
            if _before(row["updated_at"], as_of):
                stamps.append(row["updated_at"])
            else:
                out["status"] = "scheduled"
        elif not _before(row["actual_start"], as_of):
            out.update(status="scheduled", actual_start=None, actual_end=None, telemetry_summary={})
        elif not _before(row["actual_end"], as_of):
            out.update(status="in_progress", actual_end=None, telemetry_summary={})
        stamps += [out["actual_start"], out["actual_end"]]
    elif table == "alerts":
        if not _before(row["acknowledged_at"], as_of):
            out.update(acknowledged_at=None, acknowledged_by=None, status="triggered")
        if not _before(row["resolved_at"], as_of):
            out.update(resolved_at=None, resolved_by=None)
            if out["status"] == "resolved":
                out["status"] = "acknowledged"
        stamps += [out["acknowledged_at"], out["resolved_at"]]
    elif table == "maintenance_records":
        if not _before(row["completed_date"], as_of):
            started = _before(row["scheduled_date"], as_of)
            out.update(
                completed_date=None,
                status="in_progress" if started else "scheduled",
                parts_used=[],
                cost=None,
                downtime_hours=None,
            )
        stamps.append(out["completed_date"])
    elif table == "vehicle_commands":
        executed = row["executed_at"]
        if executed is not None and executed > as_of:
            out.update(executed_at=None, response_data=None, status="sent")
        elif executed is None and row["expires_at"] > as_of:
            out["status"] = "sent"
        stamps.append(row["expires_at"] if out["status"] == "expired" else out["executed_at"])
    out["updated_at"] = max(s for s in stamps if s is not None)
    return out


class Clock:
    """Converts simulated seconds (after the origin) to timestamps and local hours."""

    def __init__(self, world: World) -> None:
        self.start = world.config.origin
        self.start_epoch_s = world.config.origin.timestamp()

    def at(self, t_s: float) -> datetime:
        """The UTC timestamp `t_s` seconds after start, to the millisecond."""
        return self.start + timedelta(milliseconds=round(t_s * 1000))

    def local_hour(self, t_s: float, utc_offset_h: int) -> float:
        """Hour of day (fractional) in a city's local time."""
        return ((self.start_epoch_s + t_s) / 3600 + utc_offset_h) % 24


class VehiclePlanner:
    """Plans one vehicle's timeline and the Fleet OS records it causes."""

    def __init__(self, world: World, vehicle: Vehicle, ledger: Ledger, clock: Clock) -> None:
        self.world = world
        self.v = vehicle
        self.ledger = ledger
        self.clock = clock
        self.rng = rng_for(world.config.seed, STREAM_VEHICLE, vehicle.index)
        self.fleet = world.fleets[vehicle.fleet]
        self.org = world.orgs[vehicle.org]
        self.sector = self.org.sector
        self.city = vehicle.city
        self.utc_offset = CITIES[vehicle.city].utc_offset_h
        self.model = vehicle.model
        self.ev = self.model.powertrain == "ev"
        self.t = 0.0
        self.energy = vehicle.energy0
        self.odometer = vehicle.odometer0_km
        self.health: list[float] = vehicle.health0.tolist()
        self.wear: list[float] = vehicle.wear_per_s.tolist()
        self.dtc_lo: list[float] = vehicle.dtc_lo.tolist()
        self.lat, self.lon = self.fleet.depot
        self.heading = float(self.rng.uniform(0, 360))
        self.next_service = vehicle.first_service_s
        self.segments: list[list[float]] = []
        self.failures: list[dict[str, Any]] = []
        self.dtc_alerts: dict[int, Entry] = {}
        self.energy_alert: Entry | None = None
        self.last_kind = Kind.PARKED
        self._failed_at = 0.0
        self._energy_at_failure = 0.0
        self._failure_alert: Entry | None = None
        self._energy_estimate = self.model.consumption / 100 / self.model.capacity * 100
        if math.isfinite(vehicle.firmware_switch_s):
            self._command(
                vehicle.firmware_switch_s - 90,
                "ota_update",
                {"firmware_version": FIRMWARE_V2, "from_version": FIRMWARE_V1},
                "fleet-ota",
                "high",
                execute_after_s=90.0,
                always_succeeds=True,
            )

    # --- the plan ----------------------------------------------------------------------

    def plan_until(self, horizon_s: float) -> None:
        """Extend the timeline until it covers `horizon_s` seconds after start."""
        while self.t < horizon_s:
            self._next_activity()

    def drop_before(self, t_s: float) -> None:
        """Forget segments that ended before `t_s` (already turned into telemetry)."""
        keep = 0
        while keep < len(self.segments) - 1 and self.segments[keep][SEG_T1] <= t_s:
            keep += 1
        if keep:
            del self.segments[:keep]

    def _open(self, t: float) -> bool:
        s = self.sector
        if s.open_hour == 0 and s.close_hour >= 24:
            return True
        hour = self.clock.local_hour(t, self.utc_offset)
        return s.open_hour <= hour < s.close_hour

    def _until_open(self, t: float) -> float:
        hour = self.clock.local_hour(t, self.utc_offset)
        return ((self.sector.open_hour - hour) % 24) * 3600

    def _next_activity(self) -> None:
        rng = self.rng
        t = self.t
        hour = self.clock.local_hour(t, self.utc_offset)
        if t >= self.next_service and WORKSHOP_HOURS[0] <= hour < WORKSHOP_HOURS[1]:
            self._scheduled_service()
            return
        if not self._open(t):
            self._night()
            return
        route = self.world.routes[self.fleet.routes[int(rng.integers(len(self.fleet.routes)))]]
        # Capped so a route longer than a full charge allows cannot deny forever.
        need = min(95.0, 2 * route.distance_km * self._energy_estimate * 1.1 + RESERVE_PERCENT)
        if self.energy < need:
            self._decide(
                "energy_reserve",
                "DENY",
                f"{'battery' if self.ev else 'fuel'} {self.energy:.1f}% is below the {need:.1f}% "
                f"needed for {2 * route.distance_km:.1f} km plus a {RESERVE_PERCENT:.0f}% reserve",
                route,
                None,
            )
            self._replenish(min(100.0, max(need + 25.0, 80.0)))
            return
        self._trip_pair(route)

    def _night(self) -> None:
        rng = self.rng
        wait = self._until_open(self.t) + float(rng.uniform(0, 45 * 60))
        if rng.random() < 0.2:
            # An ad-hoc mission requested outside the tenant's operating hours.
            at = self.t + float(rng.uniform(0.1, 0.9)) * wait
            route = self.world.routes[self.fleet.routes[int(rng.integers(len(self.fleet.routes)))]]
            hour = self.clock.local_hour(at, self.utc_offset)
            self._decide(
                "operating_hours",
                "DENY",
                f"requested at {int(hour):02d}:{int(hour % 1 * 60):02d} local, outside operating "
                f"hours {self.sector.open_hour:02d}:00-{self.sector.close_hour % 24:02d}:00",
                route,
                None,
                at=at,
            )
        end = self.t + wait
        if self.ev and self.energy < 90:
            self._replenish(95.0, until=end)
        elif not self.ev and self.energy < 40:
            self._replenish(95.0)
        if self.t < end:
            self._segment(Kind.PARKED, end - self.t)

    def _replenish(self, target: float, until: float | None = None) -> None:
        """Charge (EV, at the depot charger) or refuel (ICE) up to `target` percent."""
        if self.energy >= target:
            return
        if self.ev:
            rate = self.model.charge_kw / self.model.capacity * 100 / 3600  # percent per second
            duration = (target - self.energy) / rate
            if until is not None:
                duration = min(duration, max(until - self.t, 60.0))
            self._command(
                self.t,
                "start_charging",
                {"target_percent": round(target)},
                "energy-manager",
                "normal",
            )
            self._segment(Kind.CHARGING, duration, erate=rate)
        else:
            litres = (target - self.energy) / 100 * self.model.capacity
            duration = litres / self.model.charge_kw * 60 + float(self.rng.uniform(120, 300))
            self._segment(Kind.REFUELING, duration, erate=(target - self.energy) / duration)
        if self.energy_alert is not None and self.energy >= LOW_ENERGY_PERCENT:
            self._resolve(self.energy_alert, self.t, "energy-manager")
            self.energy_alert = None

    # --- trips -------------------------------------------------------------------------

    def _trip_pair(self, route: Route) -> None:
        rng = self.rng
        mission = self.sector.mission_types[int(rng.integers(len(self.sector.mission_types)))]
        load = float(rng.uniform(0.2, 0.95)) * self.model.max_load_kg
        prep = float(rng.uniform(120, 600))
        decided = self.t
        est = route.distance_km / route.mean_speed_kmh * 3600
        out_id, back_id = new_id(rng), new_id(rng)
        self._decide(
            "trip_dispatch",
            "ALLOW",
            "all applicable policies satisfied",
            route,
            out_id,
            constraints={
                "max_speed_kmh": min(self.model.max_speed_kmh, 110),
                "reserve_percent": RESERVE_PERCENT,
                "geofence": self.world.fleets[self.v.fleet].name,
                "return_to_depot": True,
            },
        )
        dwell = float(rng.uniform(300, 2400))
        out = self._trip_row(
            out_id, route, mission, +1, load, decided, decided + prep, est, back_id
        )
        back = self._trip_row(
            back_id, route, mission, -1, 0.0, decided, decided + prep + est + dwell, est, out_id
        )
        self._command(
            decided + prep - 60, "unlock", {"trip_id": out_id}, "dispatch-service", "normal"
        )
        if not self._segment(Kind.IDLE, prep, load=load):
            self._cancel(out)
            self._cancel(back)
            return
        if not self._drive(route, +1, load, out) or not self._segment(
            Kind.IDLE, dwell, load=load * 0.1
        ):
            self._cancel(back)
            return
        if not self._drive(route, -1, 0.0, back):
            return
        self._command(self.t + 30, "lock", {"trip_id": back_id}, "dispatch-service", "normal")
        self._segment(Kind.IDLE, float(rng.uniform(300, 2700)))

    def _cancel(self, trip: Entry) -> None:
        """A trip that will not run because the vehicle broke down first."""
        trip.row.update(status="cancelled", updated_at=self.clock.at(self._failed_at))
        trip.final_s = self._failed_at

    def _trip_row(
        self,
        trip_id: str,
        route: Route,
        mission: str,
        direction: int,
        load: float,
        created: float,
        scheduled: float,
        est: float,
        pair: str,
    ) -> Entry:
        first, last = (0, -1) if direction > 0 else (-1, 0)
        row = {
            "trip_id": trip_id,
            "vehicle_id": self.v.vehicle_id,
            "route_id": route.route_id,
            "mission_type": mission,
            "status": "scheduled",
            "origin_latitude": float(route.lat[first]),
            "origin_longitude": float(route.lon[first]),
            "destination_latitude": float(route.lat[last]),
            "destination_longitude": float(route.lon[last]),
            "scheduled_start": self.clock.at(scheduled),
            "actual_start": None,
            "scheduled_end": self.clock.at(scheduled + est),
            "actual_end": None,
            "trip_parameters": {
                "leg": "outbound" if direction > 0 else "return",
                "paired_trip_id": pair,
                "load_kg": round(load, 1),
                "priority": "normal",
            },
            "telemetry_summary": {},
            "created_at": self.clock.at(created),
            "updated_at": self.clock.at(created),
        }
        return self.ledger.add("trips", row, math.inf)

    def _drive(self, route: Route, direction: int, load: float, trip: Entry) -> bool:
        """Drive a route leg; False if a component failed on the way."""
        rng = self.rng
        hour = self.clock.local_hour(self.t, self.utc_offset)
        temp, precip = self.world.ambient(self.city, self.t)
        factor = (0.8 if 7 <= hour < 9.5 or 16 <= hour < 19 else 1.0) * (1.0, 0.88, 0.7)[precip]
        factor *= float(rng.uniform(0.9, 1.1))
        distance = route.distance_km
        duration = distance / (route.mean_speed_kmh * factor) * 3600
        stops, amp = trip_shape(route.stops_per_km, distance)
        per_km = self._consumption_per_km(temp, load, route.stops_per_km) * float(
            rng.uniform(0.95, 1.12)
        )
        if rng.random() < 0.08:
            self._command(
                self.t + float(rng.uniform(0.1, 0.8)) * duration,
                "reroute",
                {
                    "trip_id": trip.row["trip_id"],
                    "reason": ["traffic", "road_closure", "weather"][int(rng.integers(3))],
                },
                "dispatch-service",
                "high",
            )
        start = self.t
        e_start, od_start = self.energy, self.odometer
        completed = self._segment(
            Kind.DRIVING,
            duration,
            route=route,
            direction=direction,
            dist=distance,
            stops=stops,
            amp=amp,
            erate=per_km,
            load=load,
        )
        travelled = self.odometer - od_start
        trip.row.update(
            status="completed" if completed else "aborted",
            actual_start=self.clock.at(start),
            actual_end=self.clock.at(self.t if completed else self._failed_at),
            telemetry_summary={
                "distance_km": round(travelled, 3),
                "duration_min": round(((self.t if completed else self._failed_at) - start) / 60, 2),
                "avg_speed_kmh": round(
                    travelled / max((self.t if completed else self._failed_at) - start, 1) * 3600, 2
                ),
                "energy_used_percent": round(
                    e_start - (self.energy if completed else self._energy_at_failure), 2
                ),
            },
        )
        trip.final_s = self.t if completed else self._failed_at
        if not completed:
            self.failures[-1]["trip_id"] = trip.row["trip_id"]
            if self._failure_alert is not None:
                self._failure_alert.row["trip_id"] = trip.row["trip_id"]
        return completed

    def _consumption_per_km(self, temp: float, load: float, stops_per_km: float) -> float:
        """Percent of the energy store used per km in these conditions."""
        if self.ev:
            climate = 1 + 0.012 * max(0.0, 18 - temp) + 0.006 * max(0.0, temp - 28)
        else:
            climate = 1 + 0.004 * max(0.0, 10 - temp) + 0.003 * max(0.0, temp - 30)
        load_factor = 1 + 0.25 * load / self.model.max_load_kg
        tires = 1 + 0.08 * (1 - self.health[1])
        return self._energy_estimate * climate * load_factor * (1 + 0.1 * stops_per_km) * tires

    # --- maintenance -------------------------------------------------------------------

    def _scheduled_service(self) -> None:
        rng = self.rng
        duration = float(rng.uniform(2, 5)) * 3600
        start = self.t
        maintenance_id = new_id(rng)
        replaced = [c for c in range(N_COMP) if self.health[c] < health.SERVICE_REPLACE_BELOW]
        if rng.random() < 0.5:
            self._decide(
                "maintenance_lockout",
                "DENY",
                "vehicle is in scheduled maintenance",
                self.world.routes[self.fleet.routes[0]],
                None,
                at=start + float(rng.uniform(0.1, 0.9)) * duration,
            )
        self._segment(Kind.MAINTENANCE, duration)
        for c in replaced:
            self._replace(c, self.t)
        parts = [self._parts(c) for c in replaced]
        labor = 1.5 + sum(COMPONENTS[c].labor_hours * 0.6 for c in replaced)
        technician = self._user("technician")
        self.ledger.add(
            "maintenance_records",
            {
                "maintenance_id": maintenance_id,
                "vehicle_id": self.v.vehicle_id,
                "maintenance_type": "scheduled",
                "component": ",".join(COMPONENTS[c].name for c in replaced) or None,
                "description": "Scheduled service: inspection"
                + (
                    f", replaced {', '.join(COMPONENTS[c].name for c in replaced)}"
                    if replaced
                    else ""
                ),
                "scheduled_date": self.clock.at(start),
                "completed_date": self.clock.at(self.t),
                "performed_by": technician,
                "parts_used": [p for group in parts for p in group],
                "cost": round(
                    labor * LABOR_RATE
                    + sum(p["unit_cost"] * p["quantity"] for g in parts for p in g),
                    2,
                ),
                "downtime_hours": round(duration / 3600, 3),
                "diagnostic_results": {
                    "odometer_km": round(self.odometer, 1),
                    "inspected": [c.name for c in COMPONENTS],
                },
                "status": "completed",
                "created_at": self.clock.at(start),
                "updated_at": self.clock.at(self.t),
            },
            self.t,
        )
        self.next_service = max(self.next_service + self.v.service_interval_s, self.t + 86400)

    def _replace(self, component: int, at: float) -> None:
        self.health[component] = float(self.rng.uniform(0.93, 1.0))
        alert = self.dtc_alerts.pop(component, None)
        if alert is not None:
            self._resolve(alert, at, self._user("technician"))

    def _parts(self, component: int) -> list[dict[str, Any]]:
        return [
            {
                "part_number": p.number,
                "name": p.name,
                "quantity": p.quantity,
                "unit_cost": p.unit_cost,
            }
            for p in COMPONENTS[component].parts
        ]

    def _failure(self, component: int, at: float) -> None:
        """A breakdown: stranded for a while, towed to the workshop, repaired, back in service."""
        rng = self.rng
        spec = COMPONENTS[component]
        self._failed_at = at
        self._energy_at_failure = self.energy
        stranded = float(rng.uniform(0.5, 2.0)) * 3600
        repair = float(rng.uniform(*spec.repair_hours)) * 3600
        self._failure_alert = alert = self._alert(
            at,
            "component_failure",
            "critical",
            f"{spec.name.replace('_', ' ')} failure: {spec.dtc_description}",
            {
                "component": spec.name,
                "dtc": self._dtc(component),
                "odometer_km": round(self.odometer, 1),
            },
            resolve_at=at + stranded + repair,
        )
        self._segment(Kind.FAULT, stranded)
        self.lat, self.lon = self.fleet.depot
        self._segment(Kind.MAINTENANCE, repair)
        self._replace(component, self.t)
        self._resolve(alert, self.t, self._user("technician"))
        maintenance_id = new_id(rng)
        labor = spec.labor_hours * float(rng.uniform(0.8, 1.4))
        parts = self._parts(component)
        self.ledger.add(
            "maintenance_records",
            {
                "maintenance_id": maintenance_id,
                "vehicle_id": self.v.vehicle_id,
                "maintenance_type": "unscheduled",
                "component": spec.name,
                "description": f"Breakdown repair: {spec.dtc_description}",
                "scheduled_date": self.clock.at(at),
                "completed_date": self.clock.at(self.t),
                "performed_by": self._user("technician"),
                "parts_used": parts,
                "cost": round(
                    labor * LABOR_RATE + sum(p["unit_cost"] * p["quantity"] for p in parts) + 180.0,
                    2,
                ),
                "downtime_hours": round((self.t - at) / 3600, 3),
                "diagnostic_results": {
                    "dtc": [self._dtc(component)],
                    "odometer_km": round(self.odometer, 1),
                },
                "status": "completed",
                "created_at": self.clock.at(at),
                "updated_at": self.clock.at(self.t),
            },
            self.t,
        )
        self.failures.append(
            {
                "vehicle_id": self.v.vehicle_id,
                "component": spec.name,
                "failed_at_s": at,
                "repaired_at_s": self.t,
                "maintenance_id": maintenance_id,
                "trip_id": None,
            }
        )

    # --- segments ----------------------------------------------------------------------

    def _segment(
        self,
        kind: Kind,
        duration: float,
        *,
        route: Route | None = None,
        direction: int = 0,
        dist: float = 0.0,
        stops: float = 1.0,
        amp: float = 0.0,
        erate: float | None = None,
        load: float = 0.0,
    ) -> bool:
        """Append a segment; on a component failure, cut it there and handle the breakdown."""
        t0 = self.t
        h0 = self.health
        rates = health.wear_rates(self.wear, h0, kind)
        failure = health.first_failure(h0, rates, duration)
        length = failure[1] if failure else duration
        if erate is None:
            erate = self._idle_drain(kind)
        e0, od0 = self.energy, self.odometer
        row = [0.0] * SEG_WIDTH
        row[SEG_T0], row[SEG_T1], row[SEG_KIND] = t0, t0 + length, float(kind)
        row[SEG_E0], row[SEG_ERATE], row[SEG_OD0], row[SEG_LOAD] = e0, erate, od0, load
        row[SEG_H0 : SEG_H0 + N_COMP] = h0
        row[SEG_HR : SEG_HR + N_COMP] = rates
        row[SEG_LAT], row[SEG_LON], row[SEG_HEADING] = self.lat, self.lon, self.heading
        if kind == Kind.DRIVING and route is not None:
            row[SEG_ROUTE], row[SEG_DIR], row[SEG_DIST] = route.index, direction, dist
            row[SEG_DUR], row[SEG_STOPS], row[SEG_AMP] = duration, stops, amp
            row[SEG_ROUGH] = route.roughness
            if failure:
                travelled = float(distance_at(np.array(length / duration), dist, stops, amp))
                along = travelled if direction > 0 else dist - travelled
                lat, lon, bearing = locate(self.world, np.array([route.index]), np.array([along]))
                self.lat, self.lon, heading = float(lat[0]), float(lon[0]), float(bearing[0])
            else:
                travelled = dist
                end = -1 if direction > 0 else 0
                self.lat, self.lon = float(route.lat[end]), float(route.lon[end])
                heading = float(route.bearing[end])
            self.heading = heading if direction > 0 else (heading + 180) % 360
            self.odometer = od0 + travelled
            energy_end = e0 - erate * travelled
        else:
            row[SEG_ROUGH] = 1.0
            energy_end = e0 + erate * length
        self.segments.append(row)
        self._watch_energy(t0, length, e0, energy_end)
        self.energy = min(max(energy_end, 0.0), 100.0)
        for component, after in health.crossings(h0, rates, length, self.dtc_lo):
            self._dtc_alert(component, t0 + after)
        self.health = [max(h - r * length, 0.0) for h, r in zip(h0, rates, strict=True)]
        self.t = t0 + length
        self.last_kind = kind
        if failure:
            self.health[failure[0]] = 0.0
            self._failure(failure[0], self.t)
            return False
        return True

    def _idle_drain(self, kind: Kind) -> float:
        """Percent per second used while not driving (HVAC, idling engine)."""
        if kind == Kind.IDLE:
            return (
                1.5 / self.model.capacity * 100 if self.ev else 0.8 / self.model.capacity * 100
            ) / 3600
        return 0.0

    def _watch_energy(self, t0: float, length: float, e0: float, e1: float) -> None:
        if self.energy_alert is None and e0 >= LOW_ENERGY_PERCENT > e1:
            at = t0 + length * (e0 - LOW_ENERGY_PERCENT) / max(e0 - e1, 1e-9)
            self.energy_alert = self._alert(
                at,
                "low_battery" if self.ev else "low_fuel",
                "warning",
                f"{'battery' if self.ev else 'fuel'} below {LOW_ENERGY_PERCENT:.0f}%",
                {"threshold_percent": LOW_ENERGY_PERCENT},
                resolve_at=math.inf,
            )

    def _dtc(self, component: int) -> str:
        spec = COMPONENTS[component]
        return spec.dtc_ev if self.ev else spec.dtc_ice

    def _dtc_alert(self, component: int, at: float) -> None:
        if component in self.dtc_alerts:
            return
        spec = COMPONENTS[component]
        code = self._dtc(component)
        self.dtc_alerts[component] = self._alert(
            at,
            "dtc_detected",
            "critical" if spec.critical else "warning",
            f"{code}: {spec.dtc_description}",
            {"dtc": code, "odometer_km": round(self.odometer, 1)},
            resolve_at=math.inf,
        )
        self._command(
            at + float(self.rng.uniform(60, 600)),
            "run_diagnostics",
            {"scope": "full", "trigger": code},
            self._user("dispatcher"),
            "high",
            response={"dtc_codes": [code]},
        )

    # --- records -----------------------------------------------------------------------

    def _user(self, role: str) -> str:
        users = self.world.users_of(self.v.org, role)
        return users[int(self.rng.integers(len(users)))].username

    def _decide(
        self,
        policy: str,
        decision: str,
        reason: str,
        route: Route,
        trip_id: str | None,
        *,
        at: float | None = None,
        constraints: dict[str, Any] | None = None,
    ) -> None:
        at = self.t if at is None else at
        stamp = self.clock.at(at)
        self.ledger.add(
            "policy_decisions",
            {
                "decision_id": new_id(self.rng),
                "policy_id": self.world.policies[(self.v.org, policy)],
                "vehicle_id": self.v.vehicle_id,
                "trip_id": trip_id,
                "action": "trip_assignment",
                "decision": decision,
                "reason": reason,
                "constraints": constraints or {},
                "context": {
                    "route_id": route.route_id,
                    "energy_percent": round(self.energy, 1),
                    "operational_status": STATUS_NAMES[int(self.last_kind)],
                    "local_hour": round(self.clock.local_hour(at, self.utc_offset), 2),
                    "sector": self.sector.name,
                },
                "decided_at": stamp,
                "created_at": stamp,
                "updated_at": stamp,
            },
            at,
        )

    def _command(
        self,
        at: float,
        command_type: str,
        parameters: dict[str, Any],
        issued_by: str,
        priority: str,
        *,
        execute_after_s: float | None = None,
        always_succeeds: bool = False,
        response: dict[str, Any] | None = None,
    ) -> None:
        rng = self.rng
        latency = (
            execute_after_s if execute_after_s is not None else float(rng.lognormal(-0.3, 0.8))
        )
        roll = 0.0 if always_succeeds else float(rng.random())
        issued = self.clock.at(at)
        expires = at + 300
        if roll < 0.95:
            status, executed = "completed", at + latency
            data = {
                "ack": True,
                "result": "ok",
                "latency_ms": round(latency * 1000),
                **(response or {}),
            }
        elif roll < 0.98:
            status, executed = "failed", at + latency
            data = {
                "ack": False,
                "error": ["vehicle_busy", "precondition_failed"][int(rng.integers(2))],
            }
        else:
            status, executed, data = "expired", None, None
        self.ledger.add(
            "vehicle_commands",
            {
                "command_id": new_id(rng),
                "vehicle_id": self.v.vehicle_id,
                "command_type": command_type,
                "parameters": parameters,
                "status": status,
                "issued_at": issued,
                "executed_at": None if executed is None else self.clock.at(executed),
                "expires_at": self.clock.at(expires),
                "issued_by": issued_by,
                "response_data": data,
                "priority": priority,
                "created_at": issued,
                "updated_at": self.clock.at(executed if executed is not None else expires),
            },
            expires if executed is None else executed,
        )

    def _alert(
        self,
        at: float,
        alert_type: str,
        severity: str,
        message: str,
        context: dict[str, Any],
        resolve_at: float,
    ) -> Entry:
        rng = self.rng
        acked = at + float(rng.uniform(60, 1800))
        stamp = self.clock.at(at)
        return self.ledger.add(
            "alerts",
            {
                "alert_id": new_id(rng),
                "vehicle_id": self.v.vehicle_id,
                "trip_id": None,
                "alert_type": alert_type,
                "severity": severity,
                "message": message,
                "context_data": context,
                "triggered_at": stamp,
                "acknowledged_at": self.clock.at(acked),
                "resolved_at": None,
                "acknowledged_by": self._user("dispatcher"),
                "resolved_by": None,
                "status": "acknowledged",
                "created_at": stamp,
                "updated_at": stamp,
            },
            resolve_at,
        )

    def _resolve(self, alert: Entry, at: float, by: str) -> None:
        alert.row.update(resolved_at=self.clock.at(max(at, 0.0)), resolved_by=by, status="resolved")
        if alert.row["acknowledged_at"] > alert.row["resolved_at"]:
            alert.row["acknowledged_at"] = alert.row["resolved_at"]
        alert.final_s = at


def segment_array(
    planners: list[VehiclePlanner], t0: float, t1: float
) -> tuple[np.ndarray, np.ndarray]:
    """Segments overlapping [t0, t1) of every vehicle, and each one's vehicle index."""
    rows: list[list[float]] = []
    owners: list[int] = []
    for planner in planners:
        for seg in planner.segments:
            if seg[SEG_T1] > t0 and seg[SEG_T0] < t1:
                rows.append(seg)
                owners.append(planner.v.index)
    return np.array(rows, dtype=np.float64).reshape(-1, SEG_WIDTH), np.array(owners, dtype=np.int64)
