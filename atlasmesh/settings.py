"""The platform's one settings object: environment first, a working local default built in."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the platform, read once from `ATLASMESH_*` variables and passed down."""

    model_config = SettingsConfigDict(env_prefix="ATLASMESH_", extra="ignore")

    home: Path = Field(
        default=Path(".atlasmesh"),
        description="Folder holding all local state; deleting it resets the platform.",
    )
    lake_url: str = Field(
        default="",
        description="Lake root: file:///path or s3://bucket/prefix. Empty: file://$HOME/lake.",
    )
    s3_endpoint_url: str = Field(
        default="", description="S3 endpoint for MinIO or another S3-compatible store."
    )
    s3_access_key_id: str = Field(default="", description="S3 access key id.")
    s3_secret_access_key: SecretStr = Field(default=SecretStr(""), description="S3 secret key.")
    s3_region: str = Field(default="us-east-1", description="S3 region.")
    s3_path_style: bool = Field(default=True, description="Path-style addressing (MinIO needs it).")
    clickhouse_url: str = Field(
        default="",
        description="ClickHouse HTTP URL. Empty: the embedded chDB service under $HOME.",
    )
    clickhouse_user: str = Field(default="default", description="ClickHouse user.")
    clickhouse_password: SecretStr = Field(
        default=SecretStr(""), description="ClickHouse password."
    )
    warehouse_port: int = Field(
        default=18123,
        ge=1,
        le=65535,
        description="Loopback port of the embedded warehouse service.",
    )
    warehouse_query_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description="Per-request time limit of the embedded warehouse service.",
    )
    # Past this a dbt query's sort or aggregation spills to disk instead of growing with
    # history (a full refresh of 17 M points held 8.5 GB without it; docs/analytics.md).
    dbt_spill_bytes: int = Field(
        default=500_000_000,
        ge=0,
        description="Memory a dbt query's sort or GROUP BY may hold before spilling to disk "
        "(0: ClickHouse's default, half the server's memory).",
    )
    fleet_core_dsn: str = Field(
        default="",
        description="SQLAlchemy URL of the fleet-core database. Empty: SQLite under $HOME.",
    )
    # A secret: Slack-style webhook URLs carry their token in the path.
    alert_webhook_url: SecretStr = Field(
        default=SecretStr(""),
        description="Webhook receiving alerts as Slack-compatible JSON. Empty: log only.",
    )
    # A secret: the URL may carry the password.
    dagster_postgres_url: SecretStr = Field(
        default=SecretStr(""),
        description="PostgreSQL URL for Dagster's runs, event log and schedules. Empty: "
        "SQLite under $DAGSTER_HOME.",
    )
    dagster_url: str = Field(
        default="http://127.0.0.1:3000",
        description="Base URL of the Dagster UI, for the run links in alerts.",
    )
    runbook_base_url: str = Field(
        default="",
        description="URL the repository is browsable under; runbook links are this plus "
        "/docs/runbooks/<type>.md. Empty: links are repository paths.",
    )

    @field_validator("home", mode="before")
    @classmethod
    def _empty_home_is_the_default(cls, value: object) -> object:
        # `ATLASMESH_HOME= atlasmesh ...` means "unset", not "scatter state in the cwd".
        return ".atlasmesh" if isinstance(value, str) and not value.strip() else value

    @field_validator("home")
    @classmethod
    def _home_can_be_a_folder(cls, value: Path) -> Path:
        # Every command would otherwise fail deep inside with a traceback about a pid file
        # or a database path; the first existing ancestor must be a folder to create it in.
        for path in (value.expanduser(), *value.expanduser().absolute().parents):
            if path.exists():
                if not path.is_dir():
                    raise ValueError(f"{path} is a file, not a folder")
                break
        return value

    @field_validator("clickhouse_url")
    @classmethod
    def _clickhouse_url_is_http(cls, value: str) -> str:
        # Clients take only scheme, host and port from it: anything else would silently reach
        # another server (no scheme: localhost:8123) or drop credentials. The value is never
        # echoed, since it may hold a password.
        from urllib.parse import urlsplit

        if not value.strip():
            return ""
        try:
            url = urlsplit(value.strip())
            port = url.port
        except ValueError:
            raise ValueError("the port is not a number from 1 to 65535") from None
        if url.scheme not in ("http", "https") or not url.hostname or port == 0:
            raise ValueError("must be http(s)://host[:port], e.g. https://clickhouse.internal:8443")
        if url.username is not None or url.password is not None:
            raise ValueError(
                "must not hold credentials: set ATLASMESH_CLICKHOUSE_USER and "
                "ATLASMESH_CLICKHOUSE_PASSWORD instead"
            )
        if url.path.strip("/") or url.query or url.fragment:
            raise ValueError("must be http(s)://host[:port] without a path or query")
        return value.strip().rstrip("/")

    @property
    def home_dir(self) -> Path:
        """Absolute state folder."""
        return self.home.expanduser().resolve()

    @property
    def lake_root(self) -> str:
        """Resolved lake URL."""
        return self.lake_url or f"file://{self.home_dir / 'lake'}"

    @property
    def warehouse_dir(self) -> Path:
        """The chDB data directory owned by the embedded warehouse service."""
        return self.home_dir / "warehouse"

    @property
    def embedded_warehouse(self) -> bool:
        """True when no ClickHouse server is configured and the embedded service is used."""
        return not self.clickhouse_url

    @property
    def warehouse_url(self) -> str:
        """HTTP URL every warehouse client talks to."""
        return self.clickhouse_url or f"http://127.0.0.1:{self.warehouse_port}"

    @property
    def fleet_core_url(self) -> str:
        """Resolved fleet-core SQLAlchemy URL."""
        return self.fleet_core_dsn or f"sqlite:///{self.home_dir / 'fleet_core.db'}"

    @property
    def dagster_home(self) -> Path:
        """DAGSTER_HOME under the state folder."""
        return self.home_dir / "dagster"


def setting_problems(exc: ValidationError) -> list[str] | None:
    """One `ATLASMESH_<NAME>: <why>` line per bad setting, or None for another model's error.

    The value is left out: a setting may be a password or a URL that holds one.
    """
    if exc.title != "Settings":
        return None
    return [
        f"ATLASMESH_{str(e['loc'][0]).upper() if e['loc'] else ''}: {e['msg']}"
        for e in exc.errors()
    ]
