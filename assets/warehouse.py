"""Warehouse layer: the dbt project as Dagster assets, keyed and grouped by its folder layout.

Two `@dbt_assets` share one manifest. Incremental models run per daily partition, the
partition's time window passed to dbt as `--vars {window_start, window_end}` (a range backfill
is one dbt run over the whole range); every other model (views, tables rebuilt whole) is
unpartitioned. dbt tests become asset checks on the model they test.
"""

import json
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, dbt_assets
from dagster_dbt.asset_utils import DAGSTER_DBT_UNIQUE_ID_METADATA_KEY

from atlasmesh.analytics import vars_arg
from orchestration.partitions import daily
from orchestration.resources import DbtResource

# The dbt selector of the models that run per partition; the translator applies the same rule.
INCREMENTAL = "config.materialized:incremental"
DBT_NODE_TYPES = ("model", "seed", "snapshot")


def layer_of(props: Mapping[str, Any]) -> str | None:
    """The first folder under models/ (staging, intermediate, marts) of a dbt node, if any."""
    fqn = props.get("fqn", [])
    # fqn = [project, folder, ..., name]: a node directly under models/ has no layer.
    if props.get("resource_type") in DBT_NODE_TYPES and len(fqn) >= 3:
        return fqn[1]
    return None


def is_incremental(props: Mapping[str, Any]) -> bool:
    """True for a model materialised incrementally: it runs per daily partition."""
    return props.get("config", {}).get("materialized") == "incremental"


class FleetDbtTranslator(DagsterDbtTranslator):
    """Asset keys `[layer, model]` and group `layer` from the folder layout, never from names."""

    def __init__(self) -> None:
        super().__init__(
            DagsterDbtTranslatorSettings(
                enable_asset_checks=True,
                # telemetry_loads_latest is the load log of the same hot-path asset as
                # vehicle_telemetry: two dbt sources, one Dagster asset.
                enable_duplicate_source_asset_keys=True,
            )
        )

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        """`[layer, name]` for models; sources keep their `meta.dagster.asset_key`."""
        meta = dbt_resource_props.get("config", {}).get("meta") or dbt_resource_props.get(
            "meta", {}
        )
        layer = layer_of(dbt_resource_props)
        if layer is None or meta.get("dagster", {}).get("asset_key"):
            return super().get_asset_key(dbt_resource_props)
        return dg.AssetKey([layer, dbt_resource_props["name"]])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        """The layer."""
        return layer_of(dbt_resource_props) or super().get_group_name(dbt_resource_props)

    def get_partitions_def(
        self, dbt_resource_props: Mapping[str, Any]
    ) -> dg.PartitionsDefinition | None:
        """Daily partitions for incremental models; none for everything else."""
        return daily if is_incremental(dbt_resource_props) else None


def window_vars(window: dg.TimeWindow) -> dict[str, str]:
    """The dbt vars of a partition time window (ISO timestamps, UTC, end exclusive)."""
    return {
        "window_start": window.start.astimezone(UTC).isoformat(),
        "window_end": window.end.astimezone(UTC).isoformat(),
    }


def dbt_build_args(dbt_vars: Mapping[str, str], window: dg.TimeWindow | None = None) -> list[str]:
    """`dbt build` arguments: the resource's vars, plus the partition window if there is one."""
    values = {**dbt_vars, **(window_vars(window) if window is not None else {})}
    # dbt unit tests check SQL logic on fixed fixture rows: they belong to development and CI
    # (`atlasmesh dbt -- build`, the test suite), and a partition window would filter their
    # fixtures away. Data tests still run, as asset checks.
    return ["build", "--exclude-resource-type", "unit_test", *vars_arg(values)]


def cross_step_tests(
    manifest: Mapping[str, Any], built: Iterable[str], tests: Iterable[str]
) -> list[str]:
    """The tests (fqn) that dbt's "buildable" selection skips in a step building `built`.

    Those are the step's checks that also read a model neither built in the step nor
    upstream of it, e.g. a fact's relationships test against a dimension built in the
    run's previous dbt invocation. They are selected explicitly so they still run.
    """
    parents = manifest["parent_map"]
    reach, stack = set(built), list(built)
    while stack:
        for parent in parents.get(stack.pop(), []):
            if parent not in reach:
                reach.add(parent)
                stack.append(parent)
    return sorted(
        ".".join(manifest["nodes"][test]["fqn"])
        for test in tests
        if not set(parents.get(test, [])) <= reach
    )


def _build(
    context: dg.AssetExecutionContext,
    dbt: DbtResource,
    manifest: Mapping[str, Any],
    window: dg.TimeWindow | None,
) -> Iterator[Any]:
    assets_def = context.assets_def
    built = {
        assets_def.get_asset_spec(key).metadata[DAGSTER_DBT_UNIQUE_ID_METADATA_KEY]
        for key in context.selected_asset_keys
    }
    tests = {
        (assets_def.get_spec_for_check_key(key).metadata or {})[DAGSTER_DBT_UNIQUE_ID_METADATA_KEY]
        for key in context.selected_asset_check_keys
    }
    args = dbt_build_args(dbt.dbt_vars, window)
    extra = cross_step_tests(manifest, built, tests)
    # A second --select is a union with the one dagster-dbt adds for the step's models.
    args += ["--select", " ".join(extra)] if extra else []
    yield from dbt.cli(args, context=context).stream()


def _has_nodes(manifest: Mapping[str, Any], incremental: bool) -> bool:
    return any(
        node.get("resource_type") == "model" and is_incremental(node) == incremental
        for node in manifest.get("nodes", {}).values()
    )


def build_warehouse_assets(manifest_path: Path) -> list[dg.AssetsDefinition]:
    """The dbt assets of the project whose parsed manifest is at `manifest_path`."""
    manifest = json.loads(manifest_path.read_text())
    translator = FleetDbtTranslator()
    assets: list[dg.AssetsDefinition] = []

    if _has_nodes(manifest, incremental=True):

        @dbt_assets(
            manifest=manifest,
            select=INCREMENTAL,
            name="dbt_incremental_models",
            dagster_dbt_translator=translator,
            partitions_def=daily,
            # A range backfill is ONE dbt run over the whole window, not one per day.
            backfill_policy=dg.BackfillPolicy.single_run(),
            pool="warehouse",
        )
        def dbt_incremental_models(
            context: dg.AssetExecutionContext, dbt: DbtResource
        ) -> Iterator[Any]:
            """Incremental models over the run's partition window."""
            yield from _build(context, dbt, manifest, context.partition_time_window)

        assets.append(dbt_incremental_models)

    if _has_nodes(manifest, incremental=False):

        @dbt_assets(
            manifest=manifest,
            exclude=INCREMENTAL,
            name="dbt_models",
            dagster_dbt_translator=translator,
            pool="warehouse",
        )
        def dbt_models(context: dg.AssetExecutionContext, dbt: DbtResource) -> Iterator[Any]:
            """Views and whole-table models, rebuilt on every run."""
            yield from _build(context, dbt, manifest, None)

        assets.append(dbt_models)
    return assets
