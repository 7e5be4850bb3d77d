"""Fleet OS changes the marts must survive: soft deletes keep history, a backwards trip is flagged."""

from __future__ import annotations

import json
import shutil
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from atlasmesh.analytics import run_dbt
from atlasmesh.fleet_core.extract import extract_all
from atlasmesh.fleet_core.store import FleetCoreStore

pytestmark = [
    pytest.mark.integration,
    pytest.mark.xdist_group("fleet"),
    pytest.mark.timeout(900),
]

SELECTION = [
    "+dim_organizations",
    "+dim_fleets",
    "+dim_vehicles",
    "+dim_routes",
    "+fct_trips",
    "+fct_vehicle_days",
    "+vehicle_latest_states",
]


def _per_vehicle(client, table: str) -> dict[str, int]:
    rows = client.query(f"SELECT toString(vehicle_id), count() FROM {table} GROUP BY vehicle_id")
    return dict(rows.result_rows)


def test_soft_deletes_keep_history_and_a_backwards_trip_is_flagged(
    simulated_fleet, fleet_analytics, tmp_path
):
    # The same world with a fleet removed, one vehicle decommissioned and a route retired,
    # after all of their activity.
    url = f"sqlite:///{tmp_path / 'fleet_core.db'}"
    shutil.copy(
        simulated_fleet.fleet_core_url.removeprefix("sqlite:///"), tmp_path / "fleet_core.db"
    )
    deleted_at = datetime.now(UTC).replace(microsecond=0)
    with FleetCoreStore(url) as store:
        vehicles = store.read("vehicles")
        fleet = vehicles[0]["fleet_id"]
        other = vehicles[-1]["vehicle_id"]
        trips = store.read("trips")
        route = trips[0]["route_id"]
        # And a trip whose recorded end precedes its start (a Fleet OS clock error).
        backwards = next(t for t in trips if t["actual_start"] and t["actual_end"])
        store.upsert(
            "trips", [{**backwards, "actual_end": backwards["actual_start"] - timedelta(hours=1)}]
        )
        assert store.soft_delete("fleets", [fleet], deleted_at) == 1
        assert store.soft_delete("vehicles", [other], deleted_at) == 1
        assert store.soft_delete("routes", [route], deleted_at) == 1
    removed_fleet_vehicles = {v["vehicle_id"] for v in vehicles if v["fleet_id"] == fleet}

    warehouse = simulated_fleet.warehouse
    fleet_core_db, schema = f"fleet_core_{uuid.uuid4().hex[:8]}", f"soft_{uuid.uuid4().hex[:8]}"
    client = warehouse.client()
    try:
        extract_all(
            url,
            simulated_fleet.lake,
            client,
            now=deleted_at + timedelta(seconds=1),
            full=True,
            database=fleet_core_db,
        )
        target = tmp_path / "target"
        baseline = fleet_analytics.schema
        after = deleted_at + timedelta(hours=1)
        result = run_dbt(
            warehouse.settings,
            ["build", "--indirect-selection", "cautious", "--select", *SELECTION],
            schema=schema,
            dbt_vars={
                **simulated_fleet.dbt_vars(),
                "fleet_core_database": fleet_core_db,
                "as_of": after.isoformat(),
            },
            target_path=target,
            capture=True,
            timeout=900,
        )
        assert result.returncode == 0, result.stdout[-8000:]
        # Every child still finds its parent: no relationship test so much as warns.
        results = json.loads((target / "run_results.json").read_text())["results"]
        relationships = [
            r
            for r in results
            if r["unique_id"].startswith("test.") and ".relationships_" in r["unique_id"]
        ]
        assert relationships and {r["status"] for r in relationships} == {"pass"}
        ordered = next(r for r in results if ".assert_trips_end_after_they_start" in r["unique_id"])
        assert ordered["status"] == "warn" and ordered["failures"] == 1
        trip = backwards["trip_id"]
        duration = "SELECT duration_minutes FROM {}.fct_trips WHERE trip_id = {{trip:UUID}}"

        def minutes(db: str) -> float | None:
            return client.query(duration.format(db), parameters={"trip": trip}).result_rows[0][0]

        assert minutes(schema) is None
        assert minutes(baseline) > 0

        for fact in ("fct_vehicle_days", "fct_trips"):
            assert _per_vehicle(client, f"{schema}.{fact}") == _per_vehicle(
                client, f"{baseline}.{fact}"
            ), fact
        trips_on_route = f"SELECT count() FROM {{db}}.fct_trips WHERE route_id = '{route}'"
        assert (
            client.command(trips_on_route.format(db=schema))
            == client.command(trips_on_route.format(db=baseline))
            > 0
        )

        dims = dict(
            client.query(
                f"SELECT toString(vehicle_id), deleted_at FROM {schema}.dim_vehicles"
            ).result_rows
        )
        assert set(dims) == {v["vehicle_id"] for v in vehicles}
        assert dims[other].replace(tzinfo=UTC) == deleted_at
        assert all(dims[v] is None for v in dims if v != other)
        fleet_row = client.query(
            f"SELECT deleted_at, vehicle_count FROM {schema}.dim_fleets WHERE fleet_id = '{fleet}'"
        ).result_rows
        assert fleet_row[0][0].replace(tzinfo=UTC) == deleted_at
        assert fleet_row[0][1] == len(removed_fleet_vehicles - {other})

        # Now (after the deletes) the decommissioned vehicle has no latest state; the
        # vehicles of the removed fleet were not decommissioned themselves and still do.
        latest = {
            row[0]
            for row in client.query(
                f"SELECT toString(vehicle_id) FROM {schema}.vehicle_latest_states"
            ).result_rows
        }
        assert latest == set(dims) - {other}
    finally:
        client.command(f"DROP DATABASE IF EXISTS {schema} SYNC")
        for suffix in ("_staging", "_intermediate"):
            client.command(f"DROP DATABASE IF EXISTS {schema}{suffix} SYNC")
        client.command(f"DROP DATABASE IF EXISTS {fleet_core_db} SYNC")
        client.close()
