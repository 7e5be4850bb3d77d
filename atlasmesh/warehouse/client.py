"""Warehouse clients: clickhouse-connect against the configured server or the embedded service."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from atlasmesh.settings import Settings
from atlasmesh.warehouse.service import ensure_running

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

# ClickHouse's codes for a user it does not know or a wrong password / missing grant.
_AUTH_CODES = frozenset({192, 193, 194, 497, 516})


class WarehouseConnectionError(RuntimeError):
    """The warehouse cannot be reached or refuses the credentials; the message says what to fix."""


def connect(settings: Settings, /, database: str | None = None, **kwargs: Any) -> Client:
    """A clickhouse-connect client to the warehouse, starting the embedded service if needed.

    `kwargs` go to `clickhouse_connect.get_client` (e.g. `settings={...}`, `compress="zstd"`).
    """
    import clickhouse_connect
    from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

    url = urlsplit(ensure_running(settings))
    secure = url.scheme == "https"
    try:
        # get_client already asks the server for its version and settings.
        return clickhouse_connect.get_client(
            host=url.hostname or "127.0.0.1",
            port=url.port or (8443 if secure else 8123),
            interface="https" if secure else "http",
            username=settings.clickhouse_user,
            password=settings.clickhouse_password.get_secret_value(),
            database=database,
            **kwargs,
        )
    except OperationalError as exc:
        raise WarehouseConnectionError(
            f"cannot reach the warehouse at {settings.warehouse_url}: {_reason(exc)}. "
            + _where_to_fix(settings)
        ) from exc
    except DatabaseError as exc:
        if getattr(exc, "code", None) in _AUTH_CODES or "AUTHENTICATION_FAILED" in str(exc):
            raise WarehouseConnectionError(
                f"the warehouse at {settings.warehouse_url} refused user "
                f"{settings.clickhouse_user!r}: check ATLASMESH_CLICKHOUSE_USER and "
                "ATLASMESH_CLICKHOUSE_PASSWORD."
            ) from exc
        if getattr(exc, "code", None) is None:
            # No ClickHouse error code: something else answers HTTP at that address.
            raise WarehouseConnectionError(
                f"{settings.warehouse_url} did not answer like a ClickHouse HTTP interface "
                f"({_reason(exc)}). " + _where_to_fix(settings)
            ) from exc
        raise


def _reason(exc: BaseException) -> str:
    """The root cause of a client error in one short line."""
    root = exc
    while root.__cause__ is not None:
        root = root.__cause__
    text = str(root).splitlines()[0] if str(root) else type(root).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _where_to_fix(settings: Settings) -> str:
    if settings.embedded_warehouse:
        return (
            "Is the embedded service running (atlasmesh warehouse status) on "
            "ATLASMESH_WAREHOUSE_PORT?"
        )
    return "Check ATLASMESH_CLICKHOUSE_URL and that the ClickHouse server is running."
