"""The warehouse: ClickHouse over HTTP, a configured server or the embedded chDB service."""
