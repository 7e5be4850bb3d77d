"""The hidden degradation process: component health in [0, 1] that wears with use until failure.

Health falls linearly within a timeline segment at a rate set by the vehicle's wear
parameters, the kind of activity and how worn the part already is (worn parts wear
faster). A component fails when its health reaches 0. Nothing here is ever written to
the lake or the fleet-core database: it is the ground truth that predictions are scored
against.
"""

from __future__ import annotations

import numpy as np

from atlasmesh.simulator.catalog import COMPONENTS, Kind

USAGE: tuple[tuple[float, ...], ...] = tuple(zip(*(c.usage for c in COMPONENTS), strict=True))
# Worn parts wear faster (heat, play, pitting): at health 0 the rate is 1 + ACCELERATION.
ACCELERATION = 1.5
SERVICE_REPLACE_BELOW = 0.5


def wear_rates(wear_per_s: list[float], health: list[float], kind: Kind) -> list[float]:
    """Health lost per second for each component during a segment of `kind`."""
    usage = USAGE[int(kind)]
    return [
        w * u * (1.0 + ACCELERATION * (1.0 - h))
        for w, u, h in zip(wear_per_s, usage, health, strict=True)
    ]


def first_failure(
    health: list[float], rates: list[float], duration_s: float
) -> tuple[int, float] | None:
    """The component that fails first within `duration_s`, and after how many seconds."""
    best: tuple[int, float] | None = None
    for c, (h, r) in enumerate(zip(health, rates, strict=True)):
        if r > 0 and h < r * duration_s:
            after = h / r
            if best is None or after < best[1]:
                best = (c, after)
    return best


def crossings(
    health: list[float], rates: list[float], duration_s: float, threshold: list[float]
) -> list[tuple[int, float]]:
    """Components whose health falls through `threshold` within the segment, with when."""
    return [
        (c, (h - th) / r)
        for c, (h, r, th) in enumerate(zip(health, rates, threshold, strict=True))
        if r > 0 and h > th >= h - r * duration_s
    ]


def dtc_probability(health: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Chance that a sample reports the component's DTC: 0 above `hi`, 1 below `lo`.

    Between the two the code is intermittent ("pending"), appearing more often as the
    part wears: the early warning a predictive model can learn from.
    """
    return np.clip((hi - health) / (hi - lo), 0.0, 1.0) ** 2
