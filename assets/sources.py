"""Sources layer: the fleet simulator plays the Fleet OS for a partition window."""

from datetime import UTC, datetime, timedelta

import dagster as dg

from orchestration.partitions import HISTORY_START, daily
from orchestration.resources import FleetCoreResource, LakeResource, PlatformResource

LANDING_TELEMETRY = dg.AssetKey(["landing", "vehicle_telemetry"])
FLEET_CORE_DB = dg.AssetKey(["sources", "fleet_core_db"])


class SimulationConfig(dg.Config):
    """Size and faults of the simulated fleet; the demo's defaults keep it within minutes.

    Every partition is a slice of ONE history that starts at `origin`: the same vehicles,
    ids and component wear carry across days. `firmware_update` (default: two weeks after
    the origin) is when a share of the vehicles starts sending schema v2.
    """

    origin: str = HISTORY_START
    firmware_update: str = ""
    seed: int = 42
    vehicles: int = 36
    interval_s: float = 30.0
    fault_rate: float = 0.01
    firmware_update_share: float = 0.3


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            LANDING_TELEMETRY,
            description="Gzip JSON-lines telemetry batches as vehicle gateways deliver them "
            "(landing/telemetry/schema=vN/date=/hour=/, keyed by arrival time; immutable).",
            partitions_def=daily,
            group_name="sources",
            metadata={"wire_format": "docs/telemetry_wire_format.md"},
        ),
        dg.AssetSpec(
            FLEET_CORE_DB,
            description="The fleet-core operational database: organizations, fleets, vehicles, "
            "routes, trips, policies, policy decisions, commands, maintenance, alerts.",
            partitions_def=daily,
            group_name="sources",
            metadata={"schema": "docs/fleet_core_schema.md"},
        ),
    ],
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def fleet_simulation(
    context: dg.AssetExecutionContext,
    config: SimulationConfig,
    lake: LakeResource,
    fleet_core: FleetCoreResource,
    platform: PlatformResource,
):
    """Simulate the fleet over the partition window (clipped at now) into landing and fleet-core."""
    from atlasmesh.simulator.config import SimConfig
    from atlasmesh.simulator.run import simulate

    window = context.partition_time_window
    # The current day's partition is simulated up to the last whole minute only: vehicles
    # cannot have reported from the future.
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    end = min(window.end, now)
    if end <= window.start:
        raise dg.Failure(f"partition window {window.start}..{window.end} is in the future")
    origin = datetime.fromisoformat(config.origin).replace(tzinfo=UTC)
    sim = SimConfig(
        seed=config.seed,
        vehicles=config.vehicles,
        days=(end - window.start).total_seconds() / 86_400,
        start=window.start,
        interval_s=config.interval_s,
        fault_rate=config.fault_rate,
        firmware_update_share=config.firmware_update_share,
        origin=origin,
        firmware_update=config.firmware_update or origin + timedelta(days=14),
    )
    context.log.info(
        f"simulating {sim.vehicles} vehicles from {sim.start:%Y-%m-%d %H:%M} to {sim.end:%Y-%m-%d %H:%M} UTC"
    )
    store = fleet_core.store()
    try:
        summary = simulate(
            sim,
            lake=lake.lake(),
            store=store,
            truth_dir=platform.settings().home_dir / "simulator" / "ground_truth",
        )
    finally:
        store.close()
    common = {"run_id": summary.run_id, "duration_s": round(summary.elapsed_s, 2)}
    yield dg.MaterializeResult(
        asset_key=LANDING_TELEMETRY,
        metadata={
            **common,
            "events": summary.events,
            "lines": summary.lines,
            "files": summary.files,
            "truncated_files": summary.truncated_files,
            "gzip_bytes": summary.gzip_bytes,
            "events_per_s": round(summary.events_per_s),
            "faults_injected": dg.MetadataValue.json(summary.faults),
            "landing_digest": summary.landing_digest,
            "path": dg.MetadataValue.path(lake.lake().uri("landing/telemetry/")),
        },
    )
    yield dg.MaterializeResult(
        asset_key=FLEET_CORE_DB,
        metadata={
            **common,
            "rows_written": dg.MetadataValue.json(summary.fleet_core_rows),
            "failures_simulated": summary.failures,
        },
    )
