"""The Fleet OS planner: a continuous timeline, policy-gated trips, breakdowns and repairs."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import numpy as np

from atlasmesh.simulator.catalog import Kind
from atlasmesh.simulator.config import SimConfig
from atlasmesh.simulator.ops import (
    SEG_E0,
    SEG_KIND,
    SEG_T0,
    SEG_T1,
    Clock,
    Ledger,
    VehiclePlanner,
    clip_row,
)
from atlasmesh.simulator.world import build_world

START = datetime(2026, 10, 1, tzinfo=UTC)


def _plan(days: float = 10, wear_factor: float = 1.0, vehicles: int = 12, chunks: int = 1):
    world = build_world(
        SimConfig(seed=4, vehicles=vehicles, days=days, start=START, wear_factor=wear_factor)
    )
    ledger = Ledger()
    clock = Clock(world)
    planners = [VehiclePlanner(world, v, ledger, clock) for v in world.vehicles]
    for k in range(1, chunks + 1):
        for p in planners:
            p.plan_until(days * 86400 * k / chunks)
    return world, planners, ledger


def test_timeline_is_continuous_and_energy_stays_in_range() -> None:
    _, planners, _ = _plan()
    kinds: Counter[int] = Counter()
    for p in planners:
        seg = np.array(p.segments)
        assert seg[0, SEG_T0] == 0
        assert np.allclose(seg[1:, SEG_T0], seg[:-1, SEG_T1])
        assert np.all(seg[:, SEG_T1] > seg[:, SEG_T0])
        assert np.all((seg[:, SEG_E0] >= 0) & (seg[:, SEG_E0] <= 100))
        assert (seg[:, SEG_KIND] == Kind.DRIVING).any()
        kinds.update(int(k) for k in seg[:, SEG_KIND])
    # Round-the-clock tenants (mines) never park; the others do every night.
    assert kinds[Kind.PARKED] and kinds[Kind.IDLE] and kinds[Kind.CHARGING]


def test_planning_in_chunks_gives_the_same_history() -> None:
    _, whole, _ = _plan(days=3)
    _, chunked, _ = _plan(days=3, chunks=7)
    assert [p.segments for p in whole] == [p.segments for p in chunked]


def test_trips_follow_policy_decisions() -> None:
    _, _, ledger = _plan()
    rows = ledger.release(START + timedelta(days=10), 10 * 86400, final=True)
    trips = {t["trip_id"]: t for t in rows["trips"]}
    decisions = rows["policy_decisions"]
    allowed = [d for d in decisions if d["decision"] == "ALLOW"]
    denied = [d for d in decisions if d["decision"] == "DENY"]
    assert allowed and denied
    assert all(
        d["trip_id"] in trips and trips[d["trip_id"]]["created_at"] == d["decided_at"]
        for d in allowed
    )
    assert all(d["trip_id"] is None and d["reason"] for d in denied)
    reasons = " ".join(d["reason"] for d in denied)
    assert "outside operating hours" in reasons and "needed for" in reasons
    completed = [t for t in trips.values() if t["status"] == "completed"]
    assert completed and all(
        t["actual_end"] > t["actual_start"] and t["telemetry_summary"]["distance_km"] > 0
        for t in completed
    )


def test_failures_strand_the_vehicle_then_repair_it() -> None:
    _, planners, ledger = _plan(days=8, wear_factor=6.0)
    failures = [f for p in planners for f in p.failures]
    assert len(failures) >= 5
    rows = ledger.release(START + timedelta(days=30), 30 * 86400, final=True)
    repairs = {m["maintenance_id"]: m for m in rows["maintenance_records"]}
    for failure in failures:
        record = repairs[failure["maintenance_id"]]
        assert (
            record["maintenance_type"] == "unscheduled"
            and record["component"] == failure["component"]
        )
        assert record["parts_used"] and record["cost"] > 0 and record["downtime_hours"] > 0
    for p in planners:
        kinds = [int(s[SEG_KIND]) for s in p.segments]
        for i, kind in enumerate(kinds):
            if kind == Kind.FAULT:
                assert kinds[i + 1] == Kind.MAINTENANCE
    alerts = [a for a in rows["alerts"] if a["alert_type"] == "component_failure"]
    assert len(alerts) == len(failures) and all(a["status"] == "resolved" for a in alerts)
    assert any(a["alert_type"] == "dtc_detected" for a in rows["alerts"])


def test_rows_show_only_what_happened_by_then() -> None:
    at = START + timedelta(hours=2)
    trip = {
        "status": "completed", "created_at": START, "updated_at": START,
        "actual_start": START + timedelta(hours=1), "actual_end": START + timedelta(hours=3),
        "telemetry_summary": {"distance_km": 5},
    }  # fmt: skip
    seen = clip_row("trips", trip, at)
    assert (
        seen["status"] == "in_progress"
        and seen["actual_end"] is None
        and seen["telemetry_summary"] == {}
    )
    assert seen["updated_at"] == START + timedelta(hours=1)
    assert clip_row("trips", trip, START - timedelta(seconds=1)) is None
    alert = {
        "status": "resolved", "created_at": START, "updated_at": START,
        "acknowledged_at": START + timedelta(hours=3), "resolved_at": START + timedelta(hours=4),
        "acknowledged_by": "a", "resolved_by": "b",
    }  # fmt: skip
    assert clip_row("alerts", alert, at)["status"] == "triggered"
    assert clip_row("alerts", alert, START + timedelta(hours=5))["updated_at"] == START + timedelta(
        hours=4
    )
