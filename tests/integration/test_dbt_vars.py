"""The dbt project's timestamp vars: ISO text goes through, anything else is refused clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from atlasmesh.analytics import run_dbt
from atlasmesh.settings import Settings

# dbt parse renders every model with the vars and never connects: no warehouse needed.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def _parse(tmp_path: Path, dbt_vars: dict[str, object]) -> tuple[int, str]:
    result = run_dbt(
        Settings(),
        ["parse", "--no-partial-parse"],
        dbt_vars=dbt_vars,
        target_path=tmp_path / "target",
        capture=True,
        timeout=240,
    )
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("as_of", "not a date"),
        # Pasted into SQL unchecked, a quote would end the literal.
        ("as_of", "2026-11-28' or 1=1 --"),
        ("as_of", 1764360000),
        ("window_start", "2026-13-01"),
    ],
)
def test_a_bad_timestamp_var_is_refused_with_its_name(
    tmp_path: Path, name: str, value: object
) -> None:
    dbt_vars = {name: value}
    if name == "window_start":
        dbt_vars["window_end"] = "2026-11-28"
    code, output = _parse(tmp_path, dbt_vars)
    assert code != 0
    assert f"var {name} must be an ISO 8601 timestamp" in output
    assert f'got "{value}"' in output


@pytest.fixture(scope="module")
def parsed(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, str, Path]:
    """One parse with valid vars of every kind: exit code, output and the target folder."""
    target = tmp_path_factory.mktemp("dbt_vars")
    code, output = _parse(
        target,
        {
            "as_of": "2026-11-28T22:00:00.123+02:00",
            "window_start": "2026-11-27",
            "window_end": "2026-11-28 00:00:00Z",
        },
    )
    return code, output, target / "target"


def test_iso_timestamps_dates_and_offsets_are_accepted(parsed: tuple[int, str, Path]) -> None:
    code, output, _ = parsed
    assert code == 0, output[-3000:]


def test_relationships_warn_only_where_a_soft_deleted_parent_leaves_the_marts(
    parsed: tuple[int, str, Path],
) -> None:
    # Organizations, fleets, vehicles and routes stay in staging and the dimensions after a
    # soft delete (tests/integration/test_dbt_soft_deletes.py), so a child without one is a
    # real error; soft-deleted trips and policies leave, and history may still name them.
    manifest = json.loads((parsed[2] / "manifest.json").read_text())
    relationships = [
        node
        for node in manifest["nodes"].values()
        if node["resource_type"] == "test"
        and (node.get("test_metadata") or {}).get("name") == "relationships"
    ]
    assert len(relationships) > 40
    for node in relationships:
        parent = node["test_metadata"]["kwargs"]["to"]
        leaves = "__trips" in parent or "__policies" in parent
        assert (node["config"]["severity"].lower() == "warn") == leaves, node["name"]
