"""What one simulation run is asked to produce: size, period, sampling and fault rates."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import orjson

from atlasmesh.telemetry.reasons import FaultClass

# TRUNCATED_FILE hits a whole delivered file, not a line: it has its own per-file rate.
LINE_FAULTS: tuple[FaultClass, ...] = tuple(
    f for f in FaultClass if f is not FaultClass.TRUNCATED_FILE
)

MAX_VEHICLES = 100_000
MAX_DAYS = 366
MAX_HISTORY_DAYS = 3 * 366
# orjson (the run id digest) and the NumPy seed streams take 64-bit integers.
MAX_SEED = 2**63 - 1
# The period must stay clear of the Unix epoch and of the warehouse's DateTime end (2106),
# with room for the faults: a GPS week rollover goes 19.6 years back, a future timestamp
# up to 400 days ahead. Certificates the simulator issues cannot predate 1950 either.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)


class SimConfigError(ValueError):
    """A simulation setting is out of range; the message names it and how to fix it."""


def _as_start(value: datetime | date | str) -> datetime:
    """A UTC datetime from a date, an aware datetime or an ISO string."""
    if isinstance(value, str):
        try:
            value = (
                date.fromisoformat(value)
                if len(value) == 10
                else datetime.fromisoformat(value.replace("Z", "+00:00"))
            )
        except ValueError:
            raise SimConfigError(
                f"start {value!r} is not an ISO date or datetime; use e.g. 2026-11-01 "
                "or 2026-11-01T00:00:00Z"
            ) from None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise SimConfigError(
                f"start {value.isoformat()} has no time zone; give it in UTC, "
                "e.g. 2026-11-01T00:00:00Z"
            )
        try:
            return value.astimezone(UTC)
        except OverflowError:
            raise SimConfigError(f"start {value.isoformat()} is out of range") from None
    if isinstance(value, date):
        return datetime.combine(value, time(0), tzinfo=UTC)
    raise SimConfigError(f"start must be a date or datetime, got {type(value).__name__}")


@dataclass(frozen=True)
class SimConfig:
    """One simulation run; the same config always produces the same bytes.

    `fault_rate` is the share of events that reach the lake with one injected fault, spread
    over the line-level fault classes by `fault_mix` (relative weights; default equal).
    `truncated_file_rate` is the share of delivered files cut short (default: `fault_rate`).
    `wear_factor` speeds up component wear (accelerated ageing: more failures per day).

    `origin` is when the fleet's history begins (default: `start`). Runs with the same
    seed, fleet and origin are slices of ONE history: a run for [start, end) plans the
    fleet from `origin` and writes the landing files that ARRIVE in [start, end) (so
    late events recorded before `start` are included, and events still held by the
    gateways at `end` are left to the next run) plus the fleet-core rows that changed
    in the window. Consecutive windows (e.g. daily partitions) never repeat an id.
    `firmware_update` is when the v2 firmware rolls out (default: `firmware_update_at`
    of the way from `origin` to the end); give it explicitly when running in windows.
    """

    seed: int
    vehicles: int
    days: float
    start: datetime
    interval_s: float = 30.0
    fault_rate: float = 0.01
    truncated_file_rate: float | None = None
    fault_mix: Mapping[FaultClass, float] | None = None
    firmware_update_share: float = 0.3
    firmware_update_at: float = 0.5
    organizations: int | None = None
    batch_s: int | None = None
    vehicles_per_gateway: int = 64
    wear_factor: float = 1.0
    origin: datetime | date | str | None = None
    firmware_update: datetime | date | str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", _as_start(self.start))
        object.__setattr__(
            self, "origin", self.start if self.origin is None else _as_start(self.origin)
        )
        if self.firmware_update is not None:
            object.__setattr__(self, "firmware_update", _as_start(self.firmware_update))
        if (
            not isinstance(self.seed, int)
            or isinstance(self.seed, bool)
            or not 0 <= self.seed <= MAX_SEED
        ):
            raise SimConfigError(f"seed must be an integer 0..{MAX_SEED}, got {self.seed!r}")
        if not 1 <= self.vehicles <= MAX_VEHICLES:
            raise SimConfigError(f"vehicles must be 1..{MAX_VEHICLES}, got {self.vehicles}")
        if not (0 < self.days <= MAX_DAYS) or not math.isfinite(self.days):
            raise SimConfigError(f"days must be in (0, {MAX_DAYS}], got {self.days}")
        if not (0.1 <= self.interval_s <= 3600):
            raise SimConfigError(
                f"interval_s must be 0.1..3600 seconds between samples, got {self.interval_s}"
            )
        if abs(self.interval_s * 1000 - round(self.interval_s * 1000)) > 1e-6:
            raise SimConfigError(
                f"interval_s {self.interval_s} is finer than a millisecond; "
                "recorded_at has millisecond resolution"
            )
        # Checked before anything adds the period to a date, which would overflow near year 9999.
        for name in ("start", "origin"):
            value = getattr(self, name)
            if not EARLIEST <= value < LATEST:
                raise SimConfigError(
                    f"{name} {value.date().isoformat()} is outside the simulated era "
                    f"{EARLIEST:%Y-%m-%d} .. {LATEST:%Y-%m-%d}"
                )
        offset_ms = round((self.start - self.origin).total_seconds() * 1000)
        if offset_ms < 0 or offset_ms % self.interval_ms:
            raise SimConfigError(
                f"origin {self.origin.isoformat()} must be at or before start "
                f"{self.start.isoformat()} by a whole number of {self.interval_s:g} s intervals"
            )
        if self.end > LATEST:
            raise SimConfigError(
                f"the period ends after {LATEST:%Y-%m-%d}, the end of the simulated era; "
                "start earlier or simulate fewer days"
            )
        if (self.end - self.origin).days > MAX_HISTORY_DAYS:
            raise SimConfigError(
                f"origin is more than {MAX_HISTORY_DAYS} days before the end; move it later"
            )
        if self.steps < 1:
            raise SimConfigError(
                f"{self.days} days at one sample every {self.interval_s} s is no sample; "
                "raise --days or lower --interval-s"
            )
        for name in ("fault_rate", "firmware_update_share", "firmware_update_at"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise SimConfigError(f"{name} must be between 0 and 1, got {value}")
        if self.truncated_file_rate is not None and not 0 <= self.truncated_file_rate <= 1:
            raise SimConfigError(
                f"truncated_file_rate must be between 0 and 1, got {self.truncated_file_rate}"
            )
        if self.fault_mix is not None:
            unknown = [k for k in self.fault_mix if FaultClass(k) not in LINE_FAULTS]
            if unknown:
                raise SimConfigError(
                    f"fault_mix has {unknown}: weights are for line-level classes "
                    f"({', '.join(LINE_FAULTS)}); TRUNCATED_FILE has truncated_file_rate"
                )
            if any(w < 0 for w in self.fault_mix.values()) or sum(self.fault_mix.values()) <= 0:
                raise SimConfigError("fault_mix weights must be >= 0 with a positive sum")
        if self.organizations is not None and not 1 <= self.organizations <= self.vehicles:
            raise SimConfigError(
                f"organizations must be 1..vehicles ({self.vehicles}), got {self.organizations}"
            )
        if self.batch_s is not None and not (60 <= self.batch_s <= 3600):
            raise SimConfigError(f"batch_s must be 60..3600 seconds, got {self.batch_s}")
        if not (0 < self.wear_factor <= 1000) or not math.isfinite(self.wear_factor):
            raise SimConfigError(f"wear_factor must be in (0, 1000], got {self.wear_factor}")
        if self.batch_s is not None and self.batch_s % 60:
            raise SimConfigError(
                f"batch_s must be a whole number of minutes (files are named by arrival "
                f"minute), got {self.batch_s}"
            )
        if self.vehicles_per_gateway < 1:
            raise SimConfigError("vehicles_per_gateway must be at least 1")

    @property
    def interval_ms(self) -> int:
        """Sampling interval in milliseconds."""
        return round(self.interval_s * 1000)

    @property
    def steps(self) -> int:
        """Samples per vehicle over the period."""
        return round(self.days * 86_400_000) // round(self.interval_s * 1000)

    @property
    def first_step(self) -> int:
        """Index of the first sample of the window, counted from the origin."""
        return round((self.start - self.origin).total_seconds() * 1000) // self.interval_ms

    @property
    def end_step(self) -> int:
        """Index (from the origin) of the first sample after the window."""
        return self.first_step + self.steps

    @property
    def origin_ms(self) -> int:
        """Origin as milliseconds since the Unix epoch."""
        return round(self.origin.timestamp() * 1000)

    @property
    def start_s(self) -> float:
        """Window start in seconds after the origin."""
        return self.first_step * self.interval_ms / 1000

    @property
    def end_s(self) -> float:
        """Window end in seconds after the origin."""
        return self.end_step * self.interval_ms / 1000

    @property
    def firmware_update_time(self) -> datetime:
        """When the share of vehicles getting the v2 firmware starts receiving it."""
        if self.firmware_update is not None:
            return self.firmware_update
        return self.origin + (self.end - self.origin) * self.firmware_update_at

    @property
    def duration_s(self) -> float:
        """Length of the simulated period in seconds."""
        return self.steps * self.interval_ms / 1000

    @property
    def end(self) -> datetime:
        """End of the simulated period (exclusive)."""
        return self.start + timedelta(seconds=self.duration_s)

    @property
    def end_ms(self) -> int:
        """Window end as milliseconds since the Unix epoch."""
        return self.start_ms + self.steps * self.interval_ms

    @property
    def start_ms(self) -> int:
        """Start as milliseconds since the Unix epoch."""
        return round(self.start.timestamp() * 1000)

    @property
    def events(self) -> int:
        """Events the vehicles record over the period (before faults add or drop lines)."""
        return self.steps * self.vehicles

    @property
    def n_organizations(self) -> int:
        """Organizations: several for tenancy, one per ten vehicles up to eight."""
        if self.organizations is not None:
            return self.organizations
        return max(1, min(8, self.vehicles, math.ceil(self.vehicles / 10)))

    @property
    def gateway_batch_s(self) -> int:
        """Seconds a gateway collects before it delivers a batch file.

        A minute at dense sampling; at sparse sampling gateways wait for about ten
        samples per vehicle (up to 15 minutes) so files do not shrink to a few lines.
        """
        if self.batch_s is not None:
            return self.batch_s
        return int(min(900, max(60, 60 * math.ceil(10 * self.interval_s / 60))))

    @property
    def line_fault_rates(self) -> dict[FaultClass, float]:
        """Per line-level class, the probability that an event carries it."""
        mix = {f: 1.0 for f in LINE_FAULTS} if self.fault_mix is None else dict(self.fault_mix)
        total = sum(mix.values())
        return {f: self.fault_rate * mix.get(f, 0.0) / total for f in LINE_FAULTS}

    @property
    def file_fault_rate(self) -> float:
        """Probability that a delivered file is truncated."""
        return self.fault_rate if self.truncated_file_rate is None else self.truncated_file_rate

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly form (stored next to the ground truth)."""
        return {
            "seed": self.seed,
            "vehicles": self.vehicles,
            "days": self.days,
            "start": self.start.isoformat().replace("+00:00", "Z"),
            "origin": self.origin.isoformat().replace("+00:00", "Z"),
            "firmware_update": self.firmware_update_time.isoformat().replace("+00:00", "Z"),
            "interval_s": self.interval_s,
            "fault_rate": self.fault_rate,
            "truncated_file_rate": self.file_fault_rate,
            "fault_mix": {str(k): v for k, v in self.line_fault_rates.items()},
            "firmware_update_share": self.firmware_update_share,
            "firmware_update_at": self.firmware_update_at,
            "organizations": self.n_organizations,
            "batch_s": self.gateway_batch_s,
            "vehicles_per_gateway": self.vehicles_per_gateway,
            "wear_factor": self.wear_factor,
        }

    @property
    def run_id(self) -> str:
        """A short digest of the config: names the ground-truth folder of this run."""
        digest = hashlib.sha256(orjson.dumps(self.to_dict(), option=orjson.OPT_SORT_KEYS))
        return f"seed{self.seed}-{digest.hexdigest()[:12]}"
