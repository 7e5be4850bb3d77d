"""Dagster resources built from the platform settings: swap infrastructure, not asset code."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import dagster as dg

from atlasmesh.settings import Settings

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

    from atlasmesh.fleet_core.store import FleetCoreStore
    from atlasmesh.lake import Lake


class LakeResource(dg.ConfigurableResource):
    """The Parquet lake: file:///... locally, s3://bucket/prefix on MinIO/S3."""

    url: str
    s3_endpoint_url: str = ""
    s3_access_key_id: str = ""
    s3_secret_access_key: str = ""
    s3_region: str = "us-east-1"
    s3_path_style: bool = True

    def settings(self) -> Settings:
        """The lake part of the settings this resource was configured with."""
        return Settings(
            lake_url=self.url,
            s3_endpoint_url=self.s3_endpoint_url,
            s3_access_key_id=self.s3_access_key_id,
            s3_secret_access_key=self.s3_secret_access_key,
            s3_region=self.s3_region,
            s3_path_style=self.s3_path_style,
        )

    def lake(self) -> Lake:
        """A lake client."""
        from atlasmesh.lake import Lake

        return Lake.from_settings(self.settings())


class WarehouseResource(dg.ConfigurableResource):
    """ClickHouse over HTTP; with `home` set, the embedded service is started when nothing answers."""

    url: str
    user: str = "default"
    password: str = ""
    home: str = ""
    port: int = 18123

    def settings(self) -> Settings:
        """The warehouse part of the settings this resource was configured with."""
        if self.home:
            return Settings(
                home=self.home,
                warehouse_port=self.port,
                clickhouse_user=self.user,
                clickhouse_password=self.password,
            )
        return Settings(
            clickhouse_url=self.url, clickhouse_user=self.user, clickhouse_password=self.password
        )

    def ensure_running(self) -> str:
        """The warehouse URL, after starting the embedded service if it is not answering."""
        from atlasmesh.warehouse.service import ensure_running

        return ensure_running(self.settings())

    def client(self, database: str | None = None) -> Client:
        """A clickhouse-connect client."""
        from atlasmesh.warehouse.client import connect

        return connect(self.settings(), database=database)


class FleetCoreResource(dg.ConfigurableResource):
    """The fleet-core operational database (SQLite file or PostgreSQL)."""

    url: str

    def store(self) -> FleetCoreStore:
        """A store over the fleet-core database, migrated to the current version."""
        from atlasmesh.fleet_core.store import FleetCoreStore

        return FleetCoreStore(self.url)


class PlatformResource(dg.ConfigurableResource):
    """Where local platform state lives (simulator ground truth, reports)."""

    home: str

    def settings(self) -> Settings:
        """Settings rooted at this home."""
        return Settings(home=self.home)


def _secret(env_name: str, value: str) -> str | dg.EnvVar:
    # A secret taken from the environment stays an EnvVar reference, so the Dagster UI
    # and run config show its name, never its value.
    return dg.EnvVar(env_name) if os.environ.get(env_name) else value


def build_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    """Every resource of the platform, from one settings object."""
    fleet_core_url = settings.fleet_core_url
    return {
        "lake": LakeResource(
            url=settings.lake_root,
            s3_endpoint_url=settings.s3_endpoint_url,
            s3_access_key_id=settings.s3_access_key_id,
            s3_secret_access_key=_secret(
                "ATLASMESH_S3_SECRET_ACCESS_KEY", settings.s3_secret_access_key.get_secret_value()
            ),
            s3_region=settings.s3_region,
            s3_path_style=settings.s3_path_style,
        ),
        "warehouse": WarehouseResource(
            url=settings.warehouse_url,
            user=settings.clickhouse_user,
            password=_secret(
                "ATLASMESH_CLICKHOUSE_PASSWORD", settings.clickhouse_password.get_secret_value()
            ),
            home=str(settings.home_dir) if settings.embedded_warehouse else "",
            port=settings.warehouse_port,
        ),
        "fleet_core": FleetCoreResource(
            url=_secret("ATLASMESH_FLEET_CORE_DSN", fleet_core_url)
            if settings.fleet_core_dsn
            else fleet_core_url
        ),
        "platform": PlatformResource(home=str(settings.home_dir)),
    }
