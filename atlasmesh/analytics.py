"""Running the dbt project (`dbt_project/`) against the configured warehouse."""

from __future__ import annotations

import fcntl
import html
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from atlasmesh.settings import Settings

PROJECT_DIR = Path(__file__).resolve().parents[1] / "dbt_project"
# The marts' database; staging and intermediate models go to `<schema>_staging` and
# `<schema>_intermediate` (dbt's default naming of custom schemas).
DEFAULT_SCHEMA = "analytics"
MANIFEST_PATH = PROJECT_DIR / "target" / "manifest.json"
# What dbt parses: a change to any file here can change the manifest, and so the asset graph.
PARSED_PATHS = ("dbt_project.yml", "models", "macros", "tests", "seeds", "snapshots", "analyses")
# dbt commands that never open a warehouse connection: no need to start the embedded service.
OFFLINE_COMMANDS = frozenset({"parse", "deps", "clean", "ls", "list", "init", "--version", "-v"})
# The files `dbt docs generate` writes that its single-page site reads.
DBT_DOCS_FILES = ("index.html", "manifest.json", "catalog.json")
DEFAULT_DOCS_PORT = 8580


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
            "ATLASMESH_DBT_SPILL_BYTES": str(settings.dbt_spill_bytes),
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


def manifest_is_stale(project_dir: Path = PROJECT_DIR) -> bool:
    """True when `target/manifest.json` is missing or older than a file dbt parses."""
    manifest = project_dir / "target" / "manifest.json"
    if not manifest.exists():
        return True
    built = manifest.stat().st_mtime
    for name in PARSED_PATHS:
        path = project_dir / name
        files = path.rglob("*") if path.is_dir() else [path]
        if any(f.is_file() and f.stat().st_mtime > built for f in files):
            return True
    return False


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    # Webserver, daemon and code server may load the definitions at the same moment: one
    # parses, the others wait and then find a fresh manifest.
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_manifest(settings: Settings) -> Path:
    """The project's `manifest.json`, after `dbt parse` if it is missing or stale."""
    if not manifest_is_stale(PROJECT_DIR):
        return MANIFEST_PATH
    target = MANIFEST_PATH.parent
    with _exclusive(target / ".parse.lock"):
        if manifest_is_stale(PROJECT_DIR):
            # parse reads profiles.yml but never connects, so no warehouse is needed.
            result = run_dbt(
                settings, ["parse", "--quiet"], target_path=target, capture=True, timeout=600
            )
            if result.returncode != 0 or not MANIFEST_PATH.exists():
                raise RuntimeError(
                    "dbt parse failed, so the dbt assets cannot be loaded:\n"
                    + (result.stdout + result.stderr)[-4000:]
                )
            # dbt may leave an unchanged manifest as it was; the mtime says "checked now".
            MANIFEST_PATH.touch()
    return MANIFEST_PATH


def prepare_warehouse(settings: Settings) -> str:
    """Start the embedded warehouse if needed and create the platform tables dbt reads as sources.

    On a warehouse where nothing was loaded yet (no ingestion, no extraction, no gate) the
    missing source tables are created empty, so a first `dbt build` works and its marts are
    simply empty. Existing tables are left alone: a fleet-core table that gains columns
    must be re-read in full, and only the extraction does that.
    """
    from atlasmesh.fleet_core.extract import ensure_warehouse_schema
    from atlasmesh.warehouse.client import connect
    from atlasmesh.warehouse.service import ensure_running
    from atlasmesh.warehouse.telemetry import ensure_schema as ensure_hot_path
    from quality.score import ensure_schema as ensure_scores

    url = ensure_running(settings)
    client = connect(settings)
    try:
        ensure_scores(client)
        ensure_hot_path(client)
        ensure_warehouse_schema(client, missing_only=True)
    finally:
        client.close()
    return url


def dbt_passthrough(
    settings: Settings, args: Sequence[str], *, schema: str = DEFAULT_SCHEMA
) -> int:
    """`atlasmesh dbt -- <args>`: run dbt with the platform's warehouse; dbt's exit code.

    Artifacts go to `$ATLASMESH_HOME/dbt/target` (unless `--target-path` or DBT_TARGET_PATH
    says otherwise): every Dagster run loads `dbt_project/target/manifest.json`, which a build
    rewriting it in place would break. `parse` still writes that manifest, under its lock.
    """
    args = list(args)
    if args and args[0] not in OFFLINE_COMMANDS:
        prepare_warehouse(settings)
    if args[:1] == ["parse"]:
        target = MANIFEST_PATH.parent
        with _exclusive(target / ".parse.lock"):
            return run_dbt(settings, args, schema=schema, target_path=target).returncode
    chosen = "--target-path" in args or any(a.startswith("--target-path=") for a in args)
    if chosen or os.environ.get("DBT_TARGET_PATH"):
        return run_dbt(settings, args, schema=schema).returncode
    return run_dbt(
        settings, args, schema=schema, target_path=passthrough_target(settings)
    ).returncode


def passthrough_target(settings: Settings) -> Path:
    """Where `atlasmesh dbt --` keeps dbt's artifacts and logs (run_results.json, manifest)."""
    return settings.home_dir / "dbt" / "target"


def docs_site_dir(settings: Settings) -> Path:
    """Where `make docs` builds the static site: one sub-folder per kind of docs (dbt/, ...)."""
    return settings.home_dir / "docs" / "site"


def generate_dbt_docs(settings: Settings, *, schema: str = DEFAULT_SCHEMA) -> Path:
    """`dbt docs generate` against the warehouse, copied into `<site>/dbt/`; that folder."""
    prepare_warehouse(settings)
    target = settings.home_dir / "dbt" / "docs-target"
    result = run_dbt(
        settings, ["docs", "generate"], schema=schema, target_path=target, capture=True
    )
    if result.returncode != 0:
        raise RuntimeError("dbt docs generate failed:\n" + result.stdout[-4000:])
    out = docs_site_dir(settings) / "dbt"
    out.mkdir(parents=True, exist_ok=True)
    for name in DBT_DOCS_FILES:
        shutil.copy2(target / name, out / name)
    (out / "TITLE").write_text("dbt: models, columns, tests and lineage\n")
    write_docs_index(docs_site_dir(settings))
    return out


def write_docs_index(site: Path) -> Path:
    """A landing page linking every sub-folder of the site that has an `index.html`.

    Other docs (e.g. Great Expectations Data Docs) join by writing `<site>/<name>/index.html`
    and, optionally, a one-line `<site>/<name>/TITLE` shown as the link text.
    """
    site.mkdir(parents=True, exist_ok=True)
    items = []
    for folder in sorted(p for p in site.iterdir() if (p / "index.html").is_file()):
        title_file = folder / "TITLE"
        title = title_file.read_text().strip() if title_file.is_file() else folder.name
        items.append(f'<li><a href="{html.escape(folder.name)}/">{html.escape(title)}</a></li>')
    listing = "\n".join(items) or "<li>nothing generated yet: run <code>make docs</code></li>"
    index = site / "index.html"
    index.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>AtlasMesh docs</title></head>"
        f"<body><h1>AtlasMesh data docs</h1><ul>\n{listing}\n</ul></body></html>\n"
    )
    return index


def serve_docs(site: Path, port: int = DEFAULT_DOCS_PORT) -> None:
    """Serve the docs site on 127.0.0.1 only, until interrupted."""
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    handler = partial(SimpleHTTPRequestHandler, directory=str(site))
    with ThreadingHTTPServer(("127.0.0.1", port), handler) as server:
        server.serve_forever()
