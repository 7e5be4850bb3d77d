"""Warehouse clients: clickhouse-connect against the configured server or the embedded service."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from atlasmesh.settings import Settings
from atlasmesh.warehouse.service import ensure_running

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client


def connect(settings: Settings, /, database: str | None = None, **kwargs: Any) -> Client:
    """A clickhouse-connect client to the warehouse, starting the embedded service if needed.

    `kwargs` go to `clickhouse_connect.get_client` (e.g. `settings={...}`, `compress="zstd"`).
    """
    import clickhouse_connect

    url = urlsplit(ensure_running(settings))
    secure = url.scheme == "https"
    return clickhouse_connect.get_client(
        host=url.hostname or "127.0.0.1",
        port=url.port or (8443 if secure else 8123),
        interface="https" if secure else "http",
        username=settings.clickhouse_user,
        password=settings.clickhouse_password.get_secret_value(),
        database=database,
        **kwargs,
    )
