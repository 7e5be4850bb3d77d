"""Dagster assets and asset checks, one module per layer: thin adapters over the libraries."""
