"""The fleet simulator: a deterministic Fleet OS producing telemetry, operational records and hidden truth."""

from atlasmesh.simulator.config import SimConfig, SimConfigError
from atlasmesh.simulator.run import SimulationSummary, simulate

__all__ = ["SimConfig", "SimConfigError", "SimulationSummary", "simulate"]
