"""Dagster's instance file (`$DAGSTER_HOME/dagster.yaml`): SQLite by default, PostgreSQL when configured."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from atlasmesh.settings import Settings

TEMPLATE = Path(__file__).with_name("dagster.yaml")
POSTGRES_ENV = "ATLASMESH_DAGSTER_POSTGRES_URL"
# The first line of every file written here: such a file (or a plain copy of the template,
# as earlier versions wrote) is rewritten when the settings change; any other dagster.yaml
# is the operator's and is left alone.
HEADER = (
    "# Written by orchestration/instance.py from orchestration/dagster.yaml; edits are replaced."
)


def instance_config(settings: Settings) -> dict[str, Any]:
    """The template's configuration, its storage switched to PostgreSQL when a URL is set."""
    config = yaml.safe_load(TEMPLATE.read_text())
    if settings.dagster_postgres_url.get_secret_value():
        # Runs, event log and schedules in one database; the URL stays an environment
        # reference, so no password is written to disk.
        config.pop("event_log_storage", None)
        config["storage"] = {"postgres": {"postgres_url": {"env": POSTGRES_ENV}}}
    return config


def prepare_dagster_home(settings: Settings, dagster_home: Path) -> Path:
    """Write `dagster.yaml` into `dagster_home` unless an operator's own file is there."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    target = dagster_home / "dagster.yaml"
    if target.exists():
        current = target.read_text()
        if not (current.startswith(HEADER) or current == TEMPLATE.read_text()):
            return target
    body = yaml.safe_dump(instance_config(settings), sort_keys=False)
    target.write_text(f"{HEADER}\n{body}")
    return target


def main() -> None:
    """`python -m orchestration.instance DAGSTER_HOME`: prepare that folder (used by `make ui`)."""
    print(prepare_dagster_home(Settings(), Path(sys.argv[1])))


if __name__ == "__main__":
    main()
