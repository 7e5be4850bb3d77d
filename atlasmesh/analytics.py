"""Running the dbt project (`dbt_project/`) against the configured warehouse."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from atlasmesh.settings import Settings

PROJECT_DIR = Path(__file__).resolve().parents[1] / "dbt_project"
# The marts' database; staging and intermediate models go to `<schema>_staging` and
# `<schema>_intermediate` (dbt's default naming of custom schemas).
DEFAULT_SCHEMA = "analytics"


def dbt_env(
    settings: Settings, schema: str = DEFAULT_SCHEMA, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment `dbt_project/profiles.yml` reads, derived from the platform settings."""
    url = urlsplit(settings.warehouse_url)
    secure = url.scheme == "https"
    env = dict(os.environ if base is None else base)
    env.update(
        {
            "DBT_CLICKHOUSE_HOST": url.hostname or "127.0.0.1",
            "DBT_CLICKHOUSE_PORT": str(url.port or (8443 if secure else 8123)),
            "DBT_CLICKHOUSE_SECURE": "true" if secure else "false",
            "DBT_CLICKHOUSE_SCHEMA": schema,
            "ATLASMESH_CLICKHOUSE_USER": settings.clickhouse_user,
            "ATLASMESH_CLICKHOUSE_PASSWORD": settings.clickhouse_password.get_secret_value(),
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
            "DBT_PROFILES_DIR": str(PROJECT_DIR),
            "DBT_PROJECT_DIR": str(PROJECT_DIR),
        }
    )
    return env


def dbt_executable() -> str:
    """The dbt entry point installed beside this interpreter (the platform's own venv)."""
    candidate = Path(sys.executable).parent / "dbt"
    return str(candidate) if candidate.exists() else "dbt"


def vars_arg(values: Mapping[str, Any]) -> list[str]:
    """`--vars` for a dbt command line (empty when there are none)."""
    return ["--vars", json.dumps(dict(values))] if values else []


def run_dbt(
    settings: Settings,
    args: Sequence[str],
    *,
    schema: str = DEFAULT_SCHEMA,
    dbt_vars: Mapping[str, Any] | None = None,
    target_path: Path | None = None,
    capture: bool = False,
    timeout: float | None = None,
) -> subprocess.CompletedProcess:
    """Run `dbt <args>` in the project with the settings' warehouse; returns the finished process."""
    command = [dbt_executable(), *args, *vars_arg(dbt_vars or {})]
    env = dbt_env(settings, schema)
    if target_path is not None:
        # Separate artifacts and logs let several builds (tests, workers) run side by side.
        env["DBT_TARGET_PATH"] = str(target_path)
        env["DBT_LOG_PATH"] = str(target_path / "logs")
    return subprocess.run(
        command,
        cwd=PROJECT_DIR,
        env=env,
        capture_output=capture,
        text=True,
        timeout=timeout,
        check=False,
    )
