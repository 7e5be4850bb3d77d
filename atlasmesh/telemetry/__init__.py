"""Telemetry schemas, validation and the shared fault classes."""
