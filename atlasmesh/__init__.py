"""AtlasMesh fleet data platform core library (no Dagster)."""
