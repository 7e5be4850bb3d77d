"""Predictive-maintenance models: dataset building, training, evaluation, registry, scoring (no Dagster)."""
