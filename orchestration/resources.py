"""Dagster resources built from the platform settings: swap infrastructure, not asset code."""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
from dagster_dbt import DbtCliResource
from dagster_dbt.core.dbt_cli_invocation import DbtCliInvocation

from atlasmesh.analytics import (
    DEFAULT_SCHEMA,
    PROJECT_DIR,
    dbt_env,
    dbt_executable,
    prepare_warehouse,
)
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


_ENVIRON_LOCK = threading.Lock()


@contextmanager
def _environ(values: Mapping[str, str]) -> Iterator[None]:
    # DbtCliResource hands dbt a copy of os.environ and has no env parameter; the warehouse
    # connection (and its password) goes to dbt this way, never on the command line or in logs.
    with _ENVIRON_LOCK:
        saved = {name: os.environ.get(name) for name in values}
        os.environ.update(values)
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


class DbtResource(DbtCliResource):
    """dbt CLI over the platform's warehouse: the connection comes from the warehouse resource."""

    warehouse: WarehouseResource
    target_schema: str = DEFAULT_SCHEMA
    # dbt vars every build gets (e.g. as_of, or source databases other than the defaults);
    # the partition window is added per run.
    dbt_vars: dict[str, str] = {}
    indirect_selection: str = "buildable"
    # Per-run dbt artifacts (run_results.json, logs); empty keeps dagster-dbt's default under
    # dbt_project/target/. Only the newest `keep_runs` are kept.
    artifacts_dir: str = ""
    keep_runs: int = 20

    def cli(self, args: Sequence[str], **kwargs: Any) -> DbtCliInvocation:
        """Start `dbt <args>` with the warehouse's connection in its environment."""
        prepare_warehouse(self.warehouse.settings())
        if self.artifacts_dir and kwargs.get("target_path") is None:
            kwargs["target_path"] = self._run_dir(kwargs.get("context"))
        env = dbt_env(self.warehouse.settings(), self.target_schema, base={})
        # dbt's default ("eager") also runs a test when only one of the models it reads is
        # selected. Dagster splits a run into several dbt invocations (incremental models
        # between whole-table ones), so eager runs e.g. a fact-vs-source test before the fact
        # exists. "buildable" runs a test in the invocation where all its models are built
        # or already upstream of it; the dbt assets select the few checks it would miss.
        env["DBT_INDIRECT_SELECTION"] = self.indirect_selection
        with _environ(env):
            return super().cli(args, **kwargs)

    def _run_dir(self, context: Any) -> Path:
        root = Path(self.artifacts_dir)
        root.mkdir(parents=True, exist_ok=True)
        old = sorted(root.iterdir(), key=lambda p: p.stat().st_mtime)[: -self.keep_runs or None]
        for path in old:
            shutil.rmtree(path, ignore_errors=True)
        run = f"{context.op_execution_context.op.name}-{context.run.run_id[:8]}-" if context else ""
        return root / f"{run}{uuid.uuid4().hex[:7]}"


def _secret(env_name: str, value: str) -> str | dg.EnvVar:
    # A secret taken from the environment stays an EnvVar reference, so the Dagster UI
    # and run config show its name, never its value.
    return dg.EnvVar(env_name) if os.environ.get(env_name) else value


def build_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    """Every resource of the platform, from one settings object."""
    fleet_core_url = settings.fleet_core_url
    warehouse = WarehouseResource(
        url=settings.warehouse_url,
        user=settings.clickhouse_user,
        password=_secret(
            "ATLASMESH_CLICKHOUSE_PASSWORD", settings.clickhouse_password.get_secret_value()
        ),
        home=str(settings.home_dir) if settings.embedded_warehouse else "",
        port=settings.warehouse_port,
    )
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
        "warehouse": warehouse,
        "dbt": DbtResource(
            project_dir=PROJECT_DIR,
            dbt_executable=dbt_executable(),
            warehouse=warehouse,
            artifacts_dir=str(settings.home_dir / "dbt" / "runs"),
        ),
        "fleet_core": FleetCoreResource(
            url=_secret("ATLASMESH_FLEET_CORE_DSN", fleet_core_url)
            if settings.fleet_core_dsn
            else fleet_core_url
        ),
        "platform": PlatformResource(home=str(settings.home_dir)),
    }
