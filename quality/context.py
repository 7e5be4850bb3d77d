"""The Great Expectations file context under $ATLASMESH_HOME/quality/gx and its Data Docs site.

One context per platform home. Great Expectations rewrites `great_expectations.yml` whenever
a data asset is added or removed and builds Data Docs by listing its stores, so validations
from several processes (Dagster runs each step in its own) take an exclusive file lock for
the duration of a run; a gate costs seconds, so the wait is short.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

from atlasmesh.settings import Settings
from quality import thresholds as th

if TYPE_CHECKING:
    from great_expectations.data_context import FileDataContext

SITE_NAME = "quality"
DATASOURCE = "warehouse"
# The connection URL is substituted at run time from this variable, so the password never
# lands in great_expectations.yml.
URL_VARIABLE = "ATLASMESH_QUALITY_WAREHOUSE_URL"
_LOCK_NAME = ".atlasmesh-quality.lock"


def project_dir(settings: Settings) -> Path:
    """The folder Great Expectations keeps its `gx/` project in ($ATLASMESH_HOME/quality)."""
    return settings.home_dir / "quality"


def gx_dir(settings: Settings) -> Path:
    """The Great Expectations project: config, suites, validation results."""
    return project_dir(settings) / "gx"


def docs_site_dir(settings: Settings) -> Path:
    """The Data Docs site, inside the folder `make docs` serves ($ATLASMESH_HOME/docs/site)."""
    return settings.home_dir / "docs" / "site" / SITE_NAME


def sqlalchemy_url(settings: Settings) -> str:
    """The clickhouse-sqlalchemy HTTP URL of the warehouse (the embedded service is started)."""
    from atlasmesh.warehouse.service import ensure_running

    url = urlsplit(ensure_running(settings))
    protocol = "https" if url.scheme == "https" else "http"
    user = quote(settings.clickhouse_user, safe="")
    password = quote(settings.clickhouse_password.get_secret_value(), safe="")
    host = url.hostname or "127.0.0.1"
    port = url.port or (8443 if protocol == "https" else 8123)
    return f"clickhouse+http://{user}:{password}@{host}:{port}/default?protocol={protocol}"


def _disable_analytics() -> None:
    # GX 1.24 ships no usage-statistics sender (its analytics module is gone and the PyPI
    # version check is never called); the variable and `analytics_enabled: false` keep it
    # off should a later release bring one back.
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


def _site_config(settings: Settings) -> dict:
    return {
        "class_name": "SiteBuilder",
        "store_backend": {
            "class_name": "TupleFilesystemStoreBackend",
            "base_directory": str(docs_site_dir(settings)),
        },
        "site_index_builder": {
            "class_name": "DefaultSiteIndexBuilder",
            "validation_results_limit": th.DOCS_INDEX_RUNS,
            "show_how_to_buttons": False,
        },
    }


def _configure(context: FileDataContext, settings: Settings) -> None:
    """Point Data Docs at the served site, silence progress bars and analytics; save if changed."""
    from great_expectations.data_context.types.base import ProgressBarsConfig

    changed = False
    wanted = _site_config(settings)
    sites = dict(context.variables.data_docs_sites or {})
    if sites != {SITE_NAME: wanted}:
        context.variables.data_docs_sites = {SITE_NAME: wanted}
        changed = True
    bars = context.variables.progress_bars
    # A ProgressBarsConfig when set in this process, a plain dict when read from the file.
    current = bars if isinstance(bars, dict) else vars(bars) if bars is not None else {}
    if current.get("globally", True) or current.get("metric_calculations", True):
        context.variables.progress_bars = ProgressBarsConfig(
            globally=False, metric_calculations=False
        )
        changed = True
    if context.variables.analytics_enabled is not False:
        context.variables.analytics_enabled = False
        changed = True
    if changed:
        context.variables.save()


@contextlib.contextmanager
def open_context(settings: Settings) -> Iterator[FileDataContext]:
    """The platform's file context, configured, held under the home's quality lock."""
    _disable_analytics()
    root = project_dir(settings)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / _LOCK_NAME, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            import great_expectations as gx

            context = gx.get_context(
                mode="file",
                project_root_dir=str(root),
                runtime_environment={URL_VARIABLE: sqlalchemy_url(settings)},
            )
            _configure(context, settings)
            yield context
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
