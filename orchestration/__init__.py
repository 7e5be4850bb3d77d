"""Dagster wiring: the one entry point, resources, partitions, sensors, schedules, jobs."""
