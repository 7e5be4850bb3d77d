"""The telemetry quality gate in Dagster: a blocking check of the publish step, judged per hour.

`assets.ingest.published_telemetry` declares `telemetry_hour_conforms` on the hot path and
hands every hour it loads to a `TelemetryGate`, which validates the hours in batches (a week
of hours, or one big hour), scores them and quarantines the ones that fail. A failing hour
stops the downstream assets of the same run (blocking check) and leaves the hot path for the
quarantine table, so no later run of the marts, features or scoring builds on it either.
Every evaluation is scored on the seed's six dimensions and stored in `ops.quality_scores`.
Great Expectations is imported at the first gate, never when the definitions load.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import dagster as dg

from orchestration.partitions import hourly

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

    from atlasmesh.lake import Lake
    from atlasmesh.settings import Settings

TELEMETRY_GATE = "telemetry_hour_conforms"
# A batch is validated once it holds a week of hours or this many rows: a backfill of small
# hours costs one Great Expectations validation per week (each costs seconds whatever its
# size), a big hour is judged as soon as it is loaded, and a step that dies leaves at most
# one batch of loaded hours unjudged. Downstream steps wait for the whole step anyway.
GATE_BATCH_HOURS = 168
GATE_BATCH_ROWS = 1_000_000

# Partitioned checks are a preview in Dagster 1.13; the gate needs the partition of the hour
# it judges, so that one preview warning is expected and silenced.
warnings.filterwarnings(
    "ignore", message="Specifying a partitions_def on an AssetCheckSpec", category=dg.PreviewWarning
)


def telemetry_gate_spec(asset: dg.AssetKey) -> dg.AssetCheckSpec:
    """The gate's check on the hot-path asset: blocking, one evaluation per hour."""
    return dg.AssetCheckSpec(
        TELEMETRY_GATE,
        asset=asset,
        blocking=True,
        partitions_def=hourly,
        description="Great Expectations gate on each loaded event hour "
        "(quality/suites/telemetry.py): row count equals the processed partition, every "
        "vehicle in fleet-core, required fields, ranges, unique ids, monotonic odometer, "
        "plausible speed between fixes. A failing hour is moved to "
        "vehicle_telemetry_quarantine and blocks everything downstream. Run the check alone "
        "to re-gate hours without publishing them again.",
    )


@dataclass(frozen=True)
class Verdict:
    """One check's result on one hour, before it becomes a Dagster result or event."""

    passed: bool
    metadata: dict[str, Any] = field(default_factory=dict)
    description: str | None = None


def _gate_metadata(outcome: Any, score: Any, quarantined: int) -> dict[str, Any]:
    summary = outcome.summary()
    metadata: dict[str, Any] = {
        "failed_rules": ", ".join(summary["failed"]) or "none",
        "warnings": ", ".join(summary["warnings"]) or "none",
        "failure_details": dg.MetadataValue.json(summary["failure_details"]),
        "expectations": summary["expectations"],
        "quarantined_rows": quarantined,
        **{k: v for k, v in score.metadata().items() if v is not None and k != "failed_dimensions"},
        "failed_dimensions": ", ".join(score.failed_dimensions) or "none",
    }
    if outcome.docs_path is not None:
        metadata["data_docs"] = dg.MetadataValue.path(str(outcome.docs_path))
    return metadata


def _description(outcome: Any) -> str:
    if outcome.success:
        return "every blocking expectation passed"
    details = "; ".join(r.describe() for r in outcome.failures)
    return f"quarantined, blocked downstream: {details}"[:1000]


class TelemetryGate:
    """Collects the hours a step loaded and judges them a batch at a time."""

    def __init__(
        self,
        settings: Settings,
        client: Client,
        lake: Lake,
        *,
        run_id: str,
        log: Any,
    ) -> None:
        self.settings, self.client, self.lake = settings, client, lake
        self.run_id, self.log = run_id, log
        # Hour -> rows the hot path must hold (None: what the lake's build manifest says).
        self.pending: dict[datetime, int | None] = {}

    def add(self, hour: datetime, expected_rows: int | None = None) -> None:
        """An hour the hot path just received (or one to judge again)."""
        self.pending[hour] = expected_rows

    def due(self) -> bool:
        """True once the pending hours make a batch."""
        rows = sum(n or 0 for n in self.pending.values())
        return len(self.pending) >= GATE_BATCH_HOURS or rows >= GATE_BATCH_ROWS

    def judge(self) -> list[tuple[datetime, Verdict]]:
        """Validate, score and (when they fail) quarantine the pending hours, oldest first."""
        from atlasmesh.warehouse.quarantine import quarantine_hour
        from quality.score import score_telemetry_hours, store_scores
        from quality.validate import validate_telemetry_hours

        # Taken first: a batch whose judging fails is not judged again by the step's clean-up.
        pending, self.pending = self.pending, {}
        hours = sorted(pending)
        if not hours:
            return []
        known = {h: n for h, n in pending.items() if n is not None}
        outcomes = validate_telemetry_hours(
            self.settings,
            hours,
            expected_rows=known,
            lake=self.lake,
            client=self.client,
            run_id=self.run_id,
        )
        scores = score_telemetry_hours(self.client, outcomes, lake=self.lake, run_id=self.run_id)
        store_scores(self.client, scores)
        verdicts = []
        for hour, outcome, score in zip(hours, outcomes, scores, strict=True):
            quarantined = 0
            if not outcome.success:
                quarantined = int(outcome.profile.get("rows") or 0)
                # An hour already out of the hot path has nothing to move, and swapping its
                # empty partition into the quarantine would wipe the rows kept there.
                if quarantined:
                    quarantine_hour(self.client, hour, load_id=f"quarantine-{self.run_id}")
                self.log.warning(f"{outcome.partition}: {_description(outcome)}")
            verdicts.append(
                (
                    hour,
                    Verdict(
                        passed=outcome.success,
                        metadata=_gate_metadata(outcome, score, quarantined),
                        description=_description(outcome),
                    ),
                )
            )
        return verdicts
