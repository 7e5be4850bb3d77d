"""One simulation run: plan the fleet, stream telemetry to the landing zone, rows to fleet-core."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from atlasmesh.simulator.catalog import COMPONENT_NAMES, STATUS_NAMES
from atlasmesh.simulator.config import SimConfig
from atlasmesh.simulator.faults import LATE_DELAY_S
from atlasmesh.simulator.ops import SEG_KIND, Clock, Ledger, VehiclePlanner, segment_array
from atlasmesh.simulator.records import EVENT_TABLES, STATIC_TABLES, final_vehicle_rows, static_rows
from atlasmesh.simulator.telemetry import VehicleArrays, health_at, locate_segments, sample_block
from atlasmesh.simulator.truth import TruthWriter, truth_root
from atlasmesh.simulator.wire import WireEncoder, uuid_series
from atlasmesh.simulator.world import (
    STREAM_FAULTS,
    STREAM_IDS,
    STREAM_SAMPLES,
    World,
    build_world,
    rng_for,
)
from atlasmesh.simulator.writer import LANDING_PREFIX, BatchWriter, LineBatch, deliver

if TYPE_CHECKING:
    from atlasmesh.fleet_core.store import FleetCoreStore
    from atlasmesh.lake import Lake
    from atlasmesh.settings import Settings

# About this many samples per block: ~150 MB of working memory whatever the fleet size.
BLOCK_SAMPLES = 200_000
# Blocks are generated whole, so short windows waste at most this much generation.
BLOCK_MAX_S = 6 * 3600


@dataclass
class SimulationSummary:
    """What a run produced (all counts are deterministic; only `elapsed_s` is not)."""

    run_id: str
    events: int
    lines: int
    files: int
    truncated_files: int
    raw_bytes: int
    gzip_bytes: int
    faults: dict[str, int]
    failures: int
    fleet_core_rows: dict[str, int]
    landing_digest: str
    ground_truth_dir: Path
    elapsed_s: float = 0.0

    @property
    def events_per_s(self) -> float:
        """Generation speed."""
        return self.events / self.elapsed_s if self.elapsed_s > 0 else float("inf")


def blocks(config: SimConfig) -> list[tuple[int, int, int]]:
    """The blocks (number, first step, end step) a run generates, on a grid fixed at the origin.

    Every block is generated whole, from its own random streams, so a sample is the same
    whichever window asks for it. A run starts early enough to regenerate the events
    recorded before its window that arrive in it (late, re-sent, in an open batch).
    """
    per_block = max(
        1, min(BLOCK_SAMPLES // config.vehicles, BLOCK_MAX_S * 1000 // config.interval_ms)
    )
    lookback_ms = LATE_DELAY_S[1] * 1000 + 3 * config.gateway_batch_s * 1000 + 10_000
    first = max(0, config.first_step - math.ceil(lookback_ms / config.interval_ms))
    return [
        (b, b * per_block, (b + 1) * per_block)
        for b in range(first // per_block, (config.end_step - 1) // per_block + 1)
    ]


def simulate(
    config: SimConfig,
    settings: Settings | None = None,
    *,
    lake: Lake | None = None,
    store: FleetCoreStore | None = None,
    truth_dir: Path | None = None,
    progress: bool = False,
) -> SimulationSummary:
    """Run a simulation; same config, same landing bytes, fleet-core rows and ground truth.

    Telemetry goes to the lake's landing zone, Fleet OS records to the fleet-core
    database, the hidden truth to `$ATLASMESH_HOME/simulator/ground_truth/<run_id>/`.
    Pass `settings`, or the lake, store and truth folder explicitly.
    """
    if settings is None and (lake is None or store is None or truth_dir is None):
        raise ValueError("simulate() needs settings, or lake, store and truth_dir")
    own_store = store is None
    if lake is None:
        from atlasmesh.lake import Lake

        lake = Lake.from_settings(settings)  # type: ignore[arg-type]
    if store is None:
        from atlasmesh.fleet_core.store import FleetCoreStore

        store = FleetCoreStore(settings.fleet_core_url)  # type: ignore[union-attr]
    root = truth_dir if truth_dir is not None else truth_root(settings.home_dir)  # type: ignore[union-attr]
    try:
        return _Run(config, lake, store, root / config.run_id).run(progress)
    finally:
        if own_store:
            store.close()


def reset_outputs(settings: Settings) -> None:
    """Delete what earlier runs produced: landing telemetry, fleet-core rows, ground truth."""
    import shutil

    from atlasmesh.fleet_core.store import FleetCoreStore
    from atlasmesh.lake import Lake

    Lake.from_settings(settings).rm(LANDING_PREFIX, recursive=True, missing_ok=True)
    with FleetCoreStore(settings.fleet_core_url) as store:
        store.truncate_all()
    shutil.rmtree(truth_root(settings.home_dir), ignore_errors=True)


class _Run:
    """One simulation run: its world, planners, writers and the order they work in."""

    def __init__(
        self, config: SimConfig, lake: Lake, store: FleetCoreStore, truth_dir: Path
    ) -> None:
        self.config = config
        self.world: World = build_world(config)
        self.lake = lake
        self.store = store
        self.truth = TruthWriter(truth_dir)
        self.ledger = Ledger()
        self.clock = Clock(self.world)
        self.planners = [
            VehiclePlanner(self.world, v, self.ledger, self.clock) for v in self.world.vehicles
        ]
        self.consts = VehicleArrays.of(self.world)
        self.encoder = WireEncoder(self.world)
        self.gateway_of = np.array([v.gateway for v in self.world.vehicles], dtype=np.int32)
        self.latency_ms = np.array([v.latency_ms for v in self.world.vehicles], dtype=np.int64)
        self.vehicle_ids = np.array([v.vehicle_id for v in self.world.vehicles], dtype=object)

    def _upsert(self, tables: tuple[str, ...], rows: dict[str, list[dict[str, Any]]]) -> None:
        # One transaction: rows that clash with another world already in the database (a
        # username of another seed's size or start, say) leave nothing behind.
        self.store.upsert_many({t: rows[t] for t in tables if rows.get(t)})

    def run(self, progress: bool) -> SimulationSummary:
        started = time.perf_counter()
        config = self.config
        self._upsert(STATIC_TABLES, static_rows(self.world))
        writer = BatchWriter(self.world, self.lake, self.truth)
        try:
            last = self._generate(writer, progress)
            digest = writer.close()
        except BaseException:
            writer.abort()
            self.truth.abort()
            raise
        released = self.ledger.release(config.end, config.end_s, final=True, since_s=config.start_s)
        self._upsert(EVENT_TABLES, released)
        self._upsert(("vehicles",), {"vehicles": final_vehicle_rows(self.world, *last)})
        failures = [
            {
                "vehicle_id": f["vehicle_id"],
                "component": f["component"],
                "failed_at": self.clock.at(f["failed_at_s"]),
                "repaired_at": self.clock.at(f["repaired_at_s"]),
                "maintenance_id": f["maintenance_id"],
                "trip_id": f["trip_id"],
            }
            for p in self.planners
            for f in p.failures
            if config.start_s <= f["failed_at_s"] < config.end_s
        ]
        counts = self.store.row_counts()
        summary = SimulationSummary(
            run_id=config.run_id,
            events=config.events,
            lines=writer.stats.lines,
            files=writer.stats.files,
            truncated_files=writer.stats.truncated_files,
            raw_bytes=writer.stats.raw_bytes,
            gzip_bytes=writer.stats.gzip_bytes,
            faults=dict(sorted(self.truth.fault_counts.items())),
            failures=len(failures),
            fleet_core_rows=counts,
            landing_digest=digest,
            ground_truth_dir=self.truth.directory,
        )
        manifest = {
            "run_id": config.run_id,
            "config": config.to_dict(),
            "events": summary.events,
            "lines_delivered": summary.lines,
            "files": summary.files,
            "truncated_files": summary.truncated_files,
            "faults": summary.faults,
            "failures": summary.failures,
            "landing_digest": digest,
            "tables": {
                "faults.parquet": "every injected fault: class, disposition, telemetry_id, file, line",
                "health.parquet": "hidden component health of every vehicle, hourly",
                "failures.parquet": "true failure times and the repair that followed",
                "vehicles.parquet": "hidden wear parameters per vehicle",
            },
        }
        self.truth.finish(failures, self._vehicle_truth(), manifest)
        summary.elapsed_s = time.perf_counter() - started
        return summary

    def _generate(self, writer: BatchWriter, progress: bool) -> tuple[np.ndarray, ...]:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        config = self.config
        interval_s = config.interval_ms / 1000
        ranges = blocks(config)
        next_release_s = (math.floor(config.start_s / 86_400) + 1) * 86_400.0
        last: tuple[np.ndarray, ...] = ()
        columns = (
            TextColumn("simulating"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("blocks"),
            TimeRemainingColumn(),
        )
        with Progress(*columns, disable=not progress, transient=True) as bar:
            task = bar.add_task("simulate", total=len(ranges))
            for b, k0, k1 in ranges:
                t0, t1 = k0 * interval_s, k1 * interval_s
                for planner in self.planners:
                    planner.plan_until(t1 + 1.0)
                seg, owner = segment_array(self.planners, t0, t1 + 1.0)
                samples = sample_block(
                    self.world,
                    self.consts,
                    seg,
                    owner,
                    k0,
                    k1,
                    rng_for(config.seed, STREAM_SAMPLES, b),
                )
                ids = uuid_series(rng_for(config.seed, STREAM_IDS, b), len(samples.vehicle))
                lines = self.encoder.encode(samples, ids)
                batch: LineBatch = deliver(
                    self.world,
                    samples,
                    lines,
                    ids,
                    rng_for(config.seed, STREAM_FAULTS, b),
                    self.gateway_of,
                    self.latency_ms,
                    # Tie-breaker in file order: unique per block and line, whatever the window.
                    b * 4 * BLOCK_SAMPLES,
                )
                writer.add(batch)
                writer.flush(config.origin_ms + round(t1 * 1000))
                self._health(seg, owner, max(t0, config.start_s), min(t1, config.end_s))
                if k0 < config.end_step <= k1:
                    # The fleet's state at its last report of the window.
                    at = slice(
                        (config.end_step - 1 - k0) * config.vehicles,
                        (config.end_step - k0) * config.vehicles,
                    )
                    last = (
                        samples.status[at],
                        samples.columns["lat"][at],
                        samples.columns["lon"][at],
                        samples.t_ms[at],
                    )
                for planner in self.planners:
                    planner.drop_before(t1)
                while t1 >= next_release_s and next_release_s < config.end_s:
                    released = self.ledger.release(
                        self.clock.at(next_release_s), next_release_s, since_s=config.start_s
                    )
                    self._upsert(EVENT_TABLES, released)
                    next_release_s += 86_400.0
                bar.advance(task)
        return last

    def _health(self, seg: np.ndarray, owner: np.ndarray, t0: float, t1: float) -> None:
        hours = np.arange(np.ceil(t0 / 3600), np.ceil(t1 / 3600)) * 3600 if t1 > t0 else np.empty(0)
        if not len(hours):
            return
        n_veh = self.config.vehicles
        vehicle = np.tile(np.arange(n_veh, dtype=np.int64), len(hours))
        t_s = np.repeat(hours, n_veh)
        idx = locate_segments(seg, owner, vehicle, np.round(t_s * 1000).astype(np.int64))
        h = health_at(seg, idx, t_s)
        kinds = seg[idx, SEG_KIND].astype(np.int64)
        columns = {
            "vehicle_id": pa.array(self.vehicle_ids[vehicle].tolist(), pa.string()),
            "at": pa.array(
                np.round(t_s * 1000).astype(np.int64) + self.config.origin_ms,
                pa.timestamp("ms", tz="UTC"),
            ),
            **{
                name: pa.array(h[:, c].astype(np.float32)) for c, name in enumerate(COMPONENT_NAMES)
            },
            "operational_status": pa.array(
                np.array(STATUS_NAMES, dtype=object)[kinds].tolist(), pa.string()
            ),
        }
        self.truth.add_health(pa.table(columns))

    def _vehicle_truth(self) -> pa.Table:
        vs = self.world.vehicles
        columns: dict[str, Any] = {
            "vehicle_id": [v.vehicle_id for v in vs],
            "model": [f"{v.model.manufacturer} {v.model.model}" for v in vs],
            "powertrain": [v.model.powertrain for v in vs],
            "leaky_tire": [int(v.leaky_tire) for v in vs],
            "service_interval_days": [v.service_interval_s / 86400 for v in vs],
        }
        for c, name in enumerate(COMPONENT_NAMES):
            columns[f"{name}_health_at_start"] = [float(v.health0[c]) for v in vs]
            columns[f"{name}_wear_per_driving_hour"] = [float(v.wear_per_s[c] * 3600) for v in vs]
            columns[f"{name}_dtc_below"] = [float(v.dtc_lo[c]) for v in vs]
            columns[f"{name}_dtc_pending_below"] = [float(v.dtc_hi[c]) for v in vs]
        return pa.table(columns)
