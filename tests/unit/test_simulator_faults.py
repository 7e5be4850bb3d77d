"""Wire lines and injected faults: clean lines follow the contract, each fault breaks one rule."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime

import numpy as np
import orjson
import pytest

from atlasmesh.simulator.catalog import SENSOR_PROFILES
from atlasmesh.simulator.config import LINE_FAULTS, SimConfig
from atlasmesh.simulator.faults import DELIVERY_FAULTS, FAULT_CODES, NO_FAULT, Injector, draw_faults
from atlasmesh.simulator.ops import Clock, Ledger, VehiclePlanner, segment_array
from atlasmesh.simulator.telemetry import VehicleArrays, sample_block
from atlasmesh.simulator.wire import WireEncoder, uuid_series
from atlasmesh.simulator.world import build_world, rng_for
from atlasmesh.simulator.writer import deliver, landing_path
from atlasmesh.telemetry import policy
from atlasmesh.telemetry.reasons import FaultClass

START = datetime(2026, 10, 1, tzinfo=UTC)
RFC3339_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


@pytest.fixture(scope="module")
def block():
    config = SimConfig(
        seed=9,
        vehicles=20,
        days=1,
        start=START,
        interval_s=10,
        firmware_update_at=0.0,
        fault_rate=0.2,
    )
    world = build_world(config)
    ledger, clock = Ledger(), Clock(world)
    planners = [VehiclePlanner(world, v, ledger, clock) for v in world.vehicles]
    k0, k1 = 3600, 3600 + 60  # 10:00 .. 10:10 UTC
    for p in planners:
        p.plan_until(k1 * 10 + 1)
    seg, owner = segment_array(planners, k0 * 10, k1 * 10 + 1)
    samples = sample_block(world, VehicleArrays.of(world), seg, owner, k0, k1, rng_for(9, 2, 0))
    ids = uuid_series(rng_for(9, 4, 0), len(samples.vehicle))
    lines = WireEncoder(world).encode(samples, ids)
    return world, samples, ids, lines


def test_clean_lines_follow_the_wire_contract(block) -> None:
    world, samples, ids, lines = block
    assert len(set(ids.to_list())) == len(lines)
    for line, v2, vehicle in zip(lines, samples.v2, samples.vehicle, strict=True):
        obj = orjson.loads(line)
        model = world.vehicles[vehicle].model
        assert RFC3339_MS.match(obj["recorded_at"])
        assert set(obj["location"]) == {"lat", "lon"} and -90 <= obj["location"]["lat"] <= 90
        heading = obj["heading_deg" if v2 else "heading_degrees"]
        assert 0 <= heading < 360 and 0 <= obj["speed_kmh"] <= 300
        assert obj["schema_version"] == ("2.0.0" if v2 else "1.0.0")
        assert ("odometer_km" in obj) == bool(v2) and ("firmware_version" in obj) == bool(v2)
        energy = (
            obj["battery_level_percent"] if model.powertrain == "ev" else obj["fuel_level_percent"]
        )
        assert 0 <= energy <= 100
        assert tuple(obj["sensor_readings"]) == SENSOR_PROFILES[model.profile_index]
        assert all(re.match(policy.DTC_PATTERN, c) for c in obj["diagnostic_codes"])
        assert obj["operational_status"] in policy.OPERATIONAL_STATUSES
        assert obj["custom_data"] == {"gateway_id": world.gateways[world.vehicles[vehicle].gateway]}
    assert samples.v2.any() and not samples.v2.all()


@pytest.mark.parametrize("fault", [f for f in LINE_FAULTS if f not in DELIVERY_FAULTS])
def test_each_content_fault_breaks_exactly_its_rule(block, fault: FaultClass) -> None:
    world, samples, _, lines = block
    injector = Injector(np.random.default_rng(0), world.ghost_vehicle_ids)
    for i in range(0, 60, 3):
        clean = orjson.loads(lines[i])
        true_ms = int(samples.t_ms[i]) + world.config.start_ms
        bad, detail = injector.apply(fault, lines[i], true_ms)
        assert detail
        _check(fault, bad, clean, true_ms, world.ghost_vehicle_ids)


def _check(fault: FaultClass, bad: bytes, clean: dict, true_ms: int, ghosts: list[str]) -> None:
    if fault is FaultClass.INVALID_UTF8:
        with pytest.raises(UnicodeDecodeError):
            bad.decode("utf-8")
        return
    if fault is FaultClass.OVERSIZED_LINE:
        assert len(bad) > policy.MAX_LINE_BYTES and isinstance(orjson.loads(bad), dict)
        return
    if fault is FaultClass.MALFORMED_JSON:
        with pytest.raises(json.JSONDecodeError):
            json.loads(bad)
        return
    obj = json.loads(bad)  # Python's json accepts NaN/Infinity literals
    if fault is FaultClass.NOT_AN_OBJECT:
        assert not isinstance(obj, dict)
        return
    changed = {k for k in clean.keys() | obj.keys() if clean.get(k) != obj.get(k)}
    if fault is FaultClass.NON_FINITE:
        values = [obj["speed_kmh"], obj["location"]["lat"], *obj["sensor_readings"].values()]
        assert any(isinstance(v, float) and not math.isfinite(v) for v in values)
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(bad)  # strict JSON refuses them
    elif fault is FaultClass.UNKNOWN_SCHEMA:
        assert changed == {"schema_version"} and obj["schema_version"].split(".")[0] not in (
            "1",
            "2",
        )
    elif fault is FaultClass.MISSING_FIELD:
        assert len(changed) == 1 and obj.get(changed.pop()) is None
    elif fault is FaultClass.WRONG_TYPE:
        assert len(changed) == 1
        (key,) = changed
        assert type(obj[key]) is not type(clean[key]) or (
            key == "location" and isinstance(obj[key]["lat"], str)
        )
    elif fault is FaultClass.OUT_OF_RANGE:
        assert len(changed) == 1
    elif fault is FaultClass.UNKNOWN_VEHICLE:
        assert changed == {"vehicle_id"} and obj["vehicle_id"] in ghosts
    else:
        assert changed == {"recorded_at"}
        text = obj["recorded_at"]
        if fault is FaultClass.INVALID_TIMESTAMP:
            valid = RFC3339_MS.match(text)
            if valid:  # right shape, impossible date
                with pytest.raises(ValueError):
                    datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")
            return
        delta = (
            datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp() * 1000
            - true_ms
        )
        if fault is FaultClass.FUTURE_TIMESTAMP:
            assert delta >= policy.MAX_FUTURE_SKEW.total_seconds() * 1000 * 10
        elif fault is FaultClass.ANCIENT_TIMESTAMP:
            assert -delta > policy.ANCIENT_HORIZON.total_seconds() * 1000
        else:
            assert 1000 <= abs(delta) <= 45_000


def test_fault_draws_follow_the_rates() -> None:
    rates = {f: 0.01 for f in LINE_FAULTS}
    codes = draw_faults(np.random.default_rng(1), 400_000, rates)
    for fault in LINE_FAULTS:
        assert abs((codes == FAULT_CODES[fault]).sum() - 4000) < 4 * math.sqrt(4000)
    assert (draw_faults(np.random.default_rng(1), 1000, {}) == NO_FAULT).all()


def test_delivery_faults_change_only_arrival(block) -> None:
    world, samples, ids, lines = block
    batch = deliver(
        world, samples, lines.copy(), ids, np.random.default_rng(3),
        np.array([v.gateway for v in world.vehicles]), np.array([v.latency_ms for v in world.vehicles]), 0,
    )  # fmt: skip
    n = len(samples.vehicle)
    code = {f: FAULT_CODES[f] for f in DELIVERY_FAULTS}
    late = np.flatnonzero(batch.fault == code[FaultClass.LATE_ARRIVAL])
    assert late.size and np.all(batch.receive[late] - batch.true_ms[late] >= 3_600_000)
    for i in np.flatnonzero(batch.fault[:n] == code[FaultClass.OUT_OF_ORDER]):
        previous = i - len(world.vehicles)
        assert (
            batch.true_ms[previous] < batch.true_ms[i]
            and batch.receive[previous] > batch.receive[i]
        )
    copies = np.flatnonzero(batch.fault[n:] == code[FaultClass.DUPLICATE]) + n
    assert copies.size
    originals = {orjson.loads(lines[j])["telemetry_id"]: j for j in range(n)}
    for c in copies:
        j = originals[batch.tid[c]]
        assert batch.data[c] == batch.data[j] and batch.receive[c] > batch.receive[j]


def test_landing_path_is_named_by_arrival() -> None:
    arrival = int(datetime(2026, 10, 1, 23, 5, tzinfo=UTC).timestamp() * 1000)
    assert landing_path(2, "gw-dubai-01-abc123", arrival) == (
        "landing/telemetry/schema=v2/date=2026-10-01/hour=23/gw-dubai-01-abc123-20261001T2305.jsonl.gz"
    )
