"""Data quality: Great Expectations suites, validation and the quality score (no Dagster)."""
