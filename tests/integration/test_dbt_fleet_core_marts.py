"""The fleet-core marts, checked value by value against polars over the fleet-core database."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl
import pytest
import sqlalchemy as sa

from atlasmesh.analytics import run_dbt
from atlasmesh.simulator.catalog import MODELS
from tests.fixtures.fleet import FleetAnalytics, SimulatedFleet

# The first test pays for the session's fleet and full dbt build (3-4 minutes on a busy
# 2-core machine), beyond the default 300 s limit.
pytestmark = [
    pytest.mark.integration,
    pytest.mark.xdist_group("fleet"),
    pytest.mark.timeout(900),
]

TIMESTAMPS: dict[str, tuple[str, ...]] = {
    "organizations": (),
    "fleets": (),
    "vehicles": (),
    "routes": (),
    "policies": (),
    "trips": ("actual_start", "actual_end"),
    "maintenance_records": ("scheduled_date", "completed_date"),
    "alerts": ("triggered_at", "acknowledged_at", "resolved_at"),
    "vehicle_commands": ("issued_at", "executed_at", "expires_at"),
    "policy_decisions": ("decided_at",),
}
# The aggregates that take as_of, with everything upstream of them (a dbt selection).
AS_OF_AGGREGATES = (
    "+maintenance_reliability_by_model",
    "+alert_response_times",
    "+command_performance",
    "+policy_decision_rates",
)


@dataclass(frozen=True)
class FleetCore:
    """The fleet-core tables as polars frames, read straight from the source database."""

    tables: dict[str, pl.DataFrame]

    def __getitem__(self, table: str) -> pl.DataFrame:
        return self.tables[table]

    def vehicles(self) -> pl.DataFrame:
        """Vehicles with the tenant of their fleet."""
        fleets = self["fleets"].select("fleet_id", "organization_id")
        return self["vehicles"].join(fleets, on="fleet_id")


def read_fleet_core(url: str) -> FleetCore:
    """Current rows of every table the marts use, timestamps parsed to UTC milliseconds."""
    engine = sa.create_engine(url)
    tables: dict[str, pl.DataFrame] = {}
    try:
        with engine.connect() as conn:
            for table, stamps in TIMESTAMPS.items():
                frame = pl.read_database(f"SELECT * FROM {table}", conn, infer_schema_length=None)
                if "deleted_at" in frame.columns:
                    frame = frame.filter(pl.col("deleted_at").is_null())
                tables[table] = frame.with_columns(
                    pl.col(c)
                    .cast(pl.String)
                    .str.to_datetime("%Y-%m-%d %H:%M:%S%.f%:z", time_zone="UTC", time_unit="ms")
                    for c in stamps
                )
    finally:
        engine.dispose()
    return FleetCore(tables)


def hours_between(start: pl.Expr, end: pl.Expr) -> pl.Expr:
    """Hours from start to end as a float."""
    return (end - start).dt.total_milliseconds() / 3_600_000


def json_float(column: str, path: str) -> pl.Expr:
    """A number inside a JSON text column (null when absent)."""
    return pl.col(column).str.json_path_match(path).cast(pl.Float64)


# --- independent computations ----------------------------------------------------------


def expected_reliability(core: FleetCore, as_of: datetime) -> pl.DataFrame:
    """Driving hours, distance, failures and MTBF per tenant and model, up to as_of."""
    cutoff = pl.lit(as_of).dt.cast_time_unit("ms")
    trips = (
        core["trips"]
        .filter(pl.col("actual_start").is_not_null() & (pl.col("actual_start") <= cutoff))
        .with_columns(
            hours_between(
                pl.col("actual_start"),
                pl.min_horizontal(pl.col("actual_end").fill_null(cutoff), cutoff),
            ).alias("driving_hours"),
            pl.when(pl.col("actual_end") <= cutoff)
            .then(json_float("telemetry_summary", "$.distance_km").fill_null(0.0))
            .otherwise(0.0)
            .alias("distance_km"),
        )
        .group_by("vehicle_id")
        .agg(
            pl.len().alias("trips_started"),
            pl.col("driving_hours").sum(),
            pl.col("distance_km").sum(),
        )
    )
    maintenance = (
        core["maintenance_records"]
        .filter(pl.col("scheduled_date") <= cutoff)
        .group_by("vehicle_id")
        .agg(
            (pl.col("maintenance_type") == "unscheduled").sum().alias("failures"),
            (pl.col("maintenance_type") == "scheduled").sum().alias("scheduled_services"),
        )
    )
    per_model = (
        core.vehicles()
        .join(trips, on="vehicle_id", how="left")
        .join(maintenance, on="vehicle_id", how="left")
        .group_by("organization_id", "manufacturer", "model")
        .agg(
            pl.len().alias("vehicles"),
            pl.col("trips_started").fill_null(0).sum(),
            pl.col("driving_hours").fill_null(0.0).sum(),
            pl.col("distance_km").fill_null(0.0).sum(),
            pl.col("failures").fill_null(0).sum(),
            pl.col("scheduled_services").fill_null(0).sum(),
        )
    )
    return per_model.with_columns(
        pl.when(pl.col("failures") > 0)
        .then(pl.col("driving_hours") / pl.col("failures"))
        .alias("mtbf_driving_hours"),
        pl.when(pl.col("failures") > 0)
        .then(pl.col("distance_km") / pl.col("failures"))
        .alias("mean_km_between_failures"),
    )


def expected_alert_response_times(core: FleetCore, as_of: datetime) -> pl.DataFrame:
    """MTTA and MTTR per tenant, alert type and severity, up to as_of."""
    cutoff = pl.lit(as_of).dt.cast_time_unit("ms")
    acked = pl.col("acknowledged_at") <= cutoff
    resolved = pl.col("resolved_at") <= cutoff
    minutes_to_ack = hours_between(pl.col("triggered_at"), pl.col("acknowledged_at")) * 60
    minutes_to_resolve = hours_between(pl.col("triggered_at"), pl.col("resolved_at")) * 60
    return (
        core["alerts"]
        .filter(pl.col("triggered_at") <= cutoff)
        .join(core.vehicles().select("vehicle_id", "organization_id"), on="vehicle_id")
        .group_by("organization_id", "alert_type", "severity")
        .agg(
            pl.len().alias("alerts"),
            acked.sum().alias("acknowledged_alerts"),
            resolved.sum().alias("resolved_alerts"),
            minutes_to_ack.filter(acked).mean().alias("mean_minutes_to_acknowledge"),
            minutes_to_resolve.filter(resolved).mean().alias("mean_minutes_to_resolve"),
        )
        .with_columns((pl.col("alerts") - pl.col("resolved_alerts")).alias("open_alerts"))
    )


def expected_command_performance(core: FleetCore, as_of: datetime) -> pl.DataFrame:
    """Outcomes, success rate and latency per tenant and command type, up to as_of."""
    cutoff = pl.lit(as_of).dt.cast_time_unit("ms")
    outcome = (
        pl.when(pl.col("executed_at") <= cutoff)
        .then(pl.col("status"))
        .when((pl.col("status") == "expired") & (pl.col("expires_at") <= cutoff))
        .then(pl.lit("expired"))
        .otherwise(pl.lit("pending"))
    )
    answered = pl.col("outcome").is_in(["completed", "failed"])
    latency = pl.col("latency_s").filter(answered)
    frame = (
        core["vehicle_commands"]
        .filter(pl.col("issued_at") <= cutoff)
        .join(core.vehicles().select("vehicle_id", "organization_id"), on="vehicle_id")
        .with_columns(
            outcome.alias("outcome"),
            (hours_between(pl.col("issued_at"), pl.col("executed_at")) * 3600).alias("latency_s"),
        )
        .group_by("organization_id", "command_type")
        .agg(
            pl.len().alias("commands"),
            *(
                (pl.col("outcome") == kind).sum().alias(f"{kind}_commands")
                for kind in ("completed", "failed", "expired", "pending")
            ),
            answered.sum().alias("answered_commands"),
            latency.mean().alias("mean_latency_s"),
            latency.quantile(0.5, interpolation="linear").alias("median_latency_s"),
            latency.quantile(0.95, interpolation="linear").alias("p95_latency_s"),
            latency.max().alias("max_latency_s"),
        )
    )
    decided = pl.col("commands") - pl.col("pending_commands")
    return frame.with_columns(
        pl.when(decided > 0).then(pl.col("completed_commands") / decided).alias("success_rate")
    )


def expected_policy_decision_rates(core: FleetCore, as_of: datetime) -> pl.DataFrame:
    """Allow and deny counts and rates per tenant, policy and sector, up to as_of."""
    cutoff = pl.lit(as_of).dt.cast_time_unit("ms")
    policies = core["policies"].select(
        "policy_id", pl.col("name").alias("policy_name"), pl.col("sector").alias("policy_sector")
    )
    return (
        core["policy_decisions"]
        .filter(pl.col("decided_at") <= cutoff)
        .join(policies, on="policy_id")
        .join(core.vehicles().select("vehicle_id", "organization_id"), on="vehicle_id")
        .with_columns(
            pl.col("context")
            .str.json_path_match("$.sector")
            .fill_null(pl.col("policy_sector"))
            .alias("sector")
        )
        .group_by("organization_id", "policy_id", "sector")
        .agg(
            pl.col("policy_name").first(),
            pl.len().alias("decisions"),
            (pl.col("decision") == "ALLOW").sum().alias("allowed_decisions"),
            (pl.col("decision") == "DENY").sum().alias("denied_decisions"),
        )
        .with_columns(
            (pl.col("allowed_decisions") / pl.col("decisions")).alias("allow_rate"),
            (pl.col("denied_decisions") / pl.col("decisions")).alias("deny_rate"),
        )
    )


# --- comparison --------------------------------------------------------------------------


def assert_same_values(
    mart: pl.DataFrame, expected: pl.DataFrame, keys: Sequence[str], columns: Sequence[str]
) -> None:
    """Same keys on both sides, and every column equal per key (floats to 1e-6)."""
    mart_keys = sorted(mart.select(keys).rows())
    expected_keys = sorted(expected.select(keys).rows())
    assert mart_keys == expected_keys
    joined = expected.join(mart, on=list(keys), suffix="__mart")
    assert joined.height == expected.height
    for row in joined.iter_rows(named=True):
        key = {k: row[k] for k in keys}
        for column in columns:
            want, got = row[column], row[f"{column}__mart"]
            if want is None:
                assert got is None, f"{column} at {key}: expected null, mart has {got}"
            elif isinstance(want, float):
                assert got == pytest.approx(want, rel=1e-9, abs=1e-6), f"{column} at {key}"
            else:
                assert got == want, f"{column} at {key}"


def query(fleet: SimulatedFleet, database: str, sql: str) -> pl.DataFrame:
    """A query's result in one database of the fleet's warehouse, as polars."""
    client = fleet.warehouse.client(database=database)
    try:
        return pl.from_arrow(client.query_arrow(sql))
    finally:
        client.close()


RELIABILITY_SQL = """
    SELECT toString(organization_id) AS organization_id, manufacturer, model, vehicles,
           trips_started, driving_hours, distance_km, failures, scheduled_services,
           mtbf_driving_hours, mean_km_between_failures
    FROM maintenance_reliability_by_model"""
ALERTS_SQL = """
    SELECT toString(organization_id) AS organization_id, alert_type, severity, alerts,
           acknowledged_alerts, resolved_alerts, open_alerts, mean_minutes_to_acknowledge,
           mean_minutes_to_resolve
    FROM alert_response_times"""
COMMANDS_SQL = """
    SELECT toString(organization_id) AS organization_id, command_type, commands,
           completed_commands, failed_commands, expired_commands, pending_commands,
           answered_commands, success_rate, mean_latency_s, median_latency_s, p95_latency_s,
           max_latency_s
    FROM command_performance"""
DECISIONS_SQL = """
    SELECT toString(organization_id) AS organization_id, toString(policy_id) AS policy_id,
           sector, policy_name, decisions, allowed_decisions, denied_decisions, allow_rate,
           deny_rate
    FROM policy_decision_rates"""

RELIABILITY_COLUMNS = (
    "vehicles",
    "trips_started",
    "driving_hours",
    "distance_km",
    "failures",
    "scheduled_services",
    "mtbf_driving_hours",
    "mean_km_between_failures",
)
ALERT_COLUMNS = (
    "alerts",
    "acknowledged_alerts",
    "resolved_alerts",
    "open_alerts",
    "mean_minutes_to_acknowledge",
    "mean_minutes_to_resolve",
)
COMMAND_COLUMNS = (
    "commands",
    "completed_commands",
    "failed_commands",
    "expired_commands",
    "pending_commands",
    "answered_commands",
    "success_rate",
    "mean_latency_s",
    "median_latency_s",
    "p95_latency_s",
    "max_latency_s",
)
DECISION_COLUMNS = (
    "policy_name",
    "decisions",
    "allowed_decisions",
    "denied_decisions",
    "allow_rate",
    "deny_rate",
)


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fleet_core(simulated_fleet: SimulatedFleet) -> FleetCore:
    """The source tables of the simulated fleet, read without the warehouse."""
    return read_fleet_core(simulated_fleet.fleet_core_url)


@dataclass(frozen=True)
class EarlierMarts:
    """The fleet-core models built again, asked of a moment inside the simulated period."""

    schema: str
    as_of: datetime


@pytest.fixture(scope="module")
def earlier_marts(
    simulated_fleet: SimulatedFleet, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EarlierMarts]:
    """The as_of aggregates rebuilt in a scratch schema (run only: the full build tested them)."""
    as_of = simulated_fleet.start + timedelta(hours=30, minutes=17)
    schema = f"fleet_core_asof_{uuid.uuid4().hex[:8]}"
    result = run_dbt(
        simulated_fleet.warehouse.settings,
        ["run", "--select", *AS_OF_AGGREGATES],
        schema=schema,
        dbt_vars={**simulated_fleet.dbt_vars(), "as_of": as_of.isoformat()},
        target_path=tmp_path_factory.mktemp("dbt_fleet_core_asof"),
        capture=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    yield EarlierMarts(schema, as_of)
    client = simulated_fleet.warehouse.client()
    try:
        for database in (schema, f"{schema}_staging", f"{schema}_intermediate"):
            client.command(f"DROP DATABASE IF EXISTS `{database}`")
    finally:
        client.close()


# --- dimensions --------------------------------------------------------------------------


def test_vehicle_dimension_carries_tenant_and_the_models_nominal_profile(
    fleet_analytics: FleetAnalytics, fleet_core: FleetCore
) -> None:
    mart = fleet_analytics.query_df(
        """SELECT toString(vehicle_id) AS vehicle_id, toString(organization_id) AS organization_id,
                  toString(fleet_id) AS fleet_id, manufacturer, model, powertrain, energy_kind,
                  energy_capacity, nominal_consumption, consumption_unit, max_load_kg
           FROM dim_vehicles"""
    )
    # The catalog the simulator drew the vehicles from: an independent source of the profile.
    catalog = pl.DataFrame(
        [
            {
                "manufacturer": m.manufacturer,
                "model": m.model,
                "powertrain": m.powertrain,
                "energy_kind": "battery" if m.powertrain == "ev" else "fuel",
                "energy_capacity": m.capacity,
                "nominal_consumption": m.consumption,
                "consumption_unit": m.consumption_unit,
                "max_load_kg": float(m.max_load_kg),
            }
            for m in MODELS
        ]
    )
    expected = (
        fleet_core.vehicles()
        .select("vehicle_id", "organization_id", "fleet_id", "manufacturer", "model")
        .join(catalog, on=["manufacturer", "model"])
    )
    assert expected.height == fleet_core["vehicles"].height > 0
    assert_same_values(
        mart,
        expected,
        ["vehicle_id"],
        [c for c in expected.columns if c != "vehicle_id"],
    )


def test_organization_fleet_and_route_dimensions_match_the_source(
    fleet_analytics: FleetAnalytics, fleet_core: FleetCore
) -> None:
    organizations = fleet_analytics.query_df(
        """SELECT toString(organization_id) AS organization_id, organization_name, sector,
                  fleet_count, vehicle_count FROM dim_organizations"""
    )
    vehicles = fleet_core.vehicles()
    expected_orgs = (
        fleet_core["organizations"]
        .select("organization_id", pl.col("name").alias("organization_name"), "sector")
        .join(
            fleet_core["fleets"].group_by("organization_id").agg(pl.len().alias("fleet_count")),
            on="organization_id",
            how="left",
        )
        .join(
            vehicles.group_by("organization_id").agg(pl.len().alias("vehicle_count")),
            on="organization_id",
            how="left",
        )
        .with_columns(pl.col("fleet_count", "vehicle_count").fill_null(0))
    )
    assert_same_values(
        organizations,
        expected_orgs,
        ["organization_id"],
        ["organization_name", "sector", "fleet_count", "vehicle_count"],
    )

    fleets = fleet_analytics.query_df(
        """SELECT toString(fleet_id) AS fleet_id, toString(organization_id) AS organization_id,
                  city, depot_latitude, vehicle_count FROM dim_fleets"""
    )
    expected_fleets = (
        fleet_core["fleets"]
        .select(
            "fleet_id",
            "organization_id",
            pl.col("configuration").str.json_path_match("$.city").alias("city"),
            json_float("configuration", "$.depot.lat").alias("depot_latitude"),
        )
        .join(
            vehicles.group_by("fleet_id").agg(pl.len().alias("vehicle_count")),
            on="fleet_id",
            how="left",
        )
        .with_columns(pl.col("vehicle_count").fill_null(0))
    )
    assert_same_values(
        fleets,
        expected_fleets,
        ["fleet_id"],
        ["organization_id", "city", "depot_latitude", "vehicle_count"],
    )

    routes = fleet_analytics.query_df(
        """SELECT toString(route_id) AS route_id, toString(organization_id) AS organization_id,
                  distance_km, waypoint_count, start_latitude, end_longitude FROM dim_routes"""
    )
    points = pl.col("waypoints").str.json_decode(
        pl.List(pl.Struct({"lat": pl.Float64, "lon": pl.Float64}))
    )
    expected_routes = fleet_core["routes"].select(
        "route_id",
        "organization_id",
        "distance_km",
        points.list.len().alias("waypoint_count"),
        points.list.first().struct.field("lat").alias("start_latitude"),
        points.list.last().struct.field("lon").alias("end_longitude"),
    )
    assert_same_values(
        routes,
        expected_routes,
        ["route_id"],
        ["organization_id", "distance_km", "waypoint_count", "start_latitude", "end_longitude"],
    )


# --- maintenance -------------------------------------------------------------------------


def test_maintenance_fact_splits_every_jobs_cost_into_parts_and_the_rest(
    fleet_analytics: FleetAnalytics, fleet_core: FleetCore
) -> None:
    mart = fleet_analytics.query_df(
        """SELECT toString(maintenance_id) AS maintenance_id,
                  toString(organization_id) AS organization_id, maintenance_type,
                  toUInt8(is_unscheduled) AS is_unscheduled, status, cost, downtime_hours,
                  elapsed_hours, parts_cost, parts_quantity, labour_and_other_cost
           FROM fct_maintenance_records"""
    )
    parts = pl.col("parts_used").str.json_decode(
        pl.List(
            pl.Struct({"part_number": pl.String, "quantity": pl.Int64, "unit_cost": pl.Float64})
        )
    )
    expected = (
        fleet_core["maintenance_records"]
        .join(fleet_core.vehicles().select("vehicle_id", "organization_id"), on="vehicle_id")
        .with_columns(
            parts.list.eval(
                pl.element().struct.field("quantity") * pl.element().struct.field("unit_cost")
            )
            .list.sum()
            .alias("parts_cost"),
            parts.list.eval(pl.element().struct.field("quantity"))
            .list.sum()
            .alias("parts_quantity"),
        )
        .select(
            "maintenance_id",
            "organization_id",
            "maintenance_type",
            (pl.col("maintenance_type") == "unscheduled").cast(pl.UInt8).alias("is_unscheduled"),
            "status",
            pl.col("cost").cast(pl.Float64),
            pl.col("downtime_hours").cast(pl.Float64),
            hours_between(pl.col("scheduled_date"), pl.col("completed_date")).alias(
                "elapsed_hours"
            ),
            pl.col("parts_cost").cast(pl.Float64),
            pl.col("parts_quantity").cast(pl.Int64),
            (pl.col("cost") - pl.col("parts_cost")).cast(pl.Float64).alias("labour_and_other_cost"),
        )
    )
    assert expected.filter(pl.col("is_unscheduled") == 1).height > 0
    assert expected["cost"].drop_nulls().sum() > 0
    assert_same_values(
        mart.with_columns(pl.col("parts_quantity").cast(pl.Int64)),
        expected,
        ["maintenance_id"],
        [c for c in expected.columns if c != "maintenance_id"],
    )


def test_mtbf_per_model_is_driving_time_over_unscheduled_repairs(
    fleet_analytics: FleetAnalytics, fleet_core: FleetCore, simulated_fleet: SimulatedFleet
) -> None:
    expected = expected_reliability(fleet_core, simulated_fleet.end)
    # Not vacuous: the fleet broke down and drove, so some MTBF is a real number.
    assert expected["failures"].sum() > 0
    assert expected["mtbf_driving_hours"].drop_nulls().len() > 0
    assert_same_values(
        fleet_analytics.query_df(RELIABILITY_SQL),
        expected,
        ["organization_id", "manufacturer", "model"],
        RELIABILITY_COLUMNS,
    )


# --- operations --------------------------------------------------------------------------


def test_alert_fact_times_every_acknowledgement_and_resolution(
    fleet_analytics: FleetAnalytics, fleet_core: FleetCore
) -> None:
    mart = fleet_analytics.query_df(
        """SELECT toString(alert_id) AS alert_id, toString(organization_id) AS organization_id,
                  alert_type, severity, minutes_to_acknowledge, minutes_to_resolve
           FROM fct_alerts"""
    )
    expected = (
        fleet_core["alerts"]
        .join(fleet_core.vehicles().select("vehicle_id", "organization_id"), on="vehicle_id")
        .select(
            "alert_id",
            "organization_id",
            "alert_type",
            "severity",
            (hours_between(pl.col("triggered_at"), pl.col("acknowledged_at")) * 60).alias(
                "minutes_to_acknowledge"
            ),
            (hours_between(pl.col("triggered_at"), pl.col("resolved_at")) * 60).alias(
                "minutes_to_resolve"
            ),
        )
    )
    assert_same_values(
        mart, expected, ["alert_id"], [c for c in expected.columns if c != "alert_id"]
    )


def test_mtta_and_mttr_per_type_and_severity(
    fleet_analytics: FleetAnalytics, fleet_core: FleetCore, simulated_fleet: SimulatedFleet
) -> None:
    expected = expected_alert_response_times(fleet_core, simulated_fleet.end)
    assert expected["resolved_alerts"].sum() > 0
    assert_same_values(
        fleet_analytics.query_df(ALERTS_SQL),
        expected,
        ["organization_id", "alert_type", "severity"],
        ALERT_COLUMNS,
    )


def test_command_success_rate_and_latency_per_type(
    fleet_analytics: FleetAnalytics, fleet_core: FleetCore, simulated_fleet: SimulatedFleet
) -> None:
    expected = expected_command_performance(fleet_core, simulated_fleet.end)
    # Not vacuous: some commands failed, so success rates below 1 are checked too.
    assert expected["failed_commands"].sum() + expected["expired_commands"].sum() > 0
    assert_same_values(
        fleet_analytics.query_df(COMMANDS_SQL),
        expected,
        ["organization_id", "command_type"],
        COMMAND_COLUMNS,
    )


def test_allow_and_deny_rates_per_policy_and_sector(
    fleet_analytics: FleetAnalytics, fleet_core: FleetCore, simulated_fleet: SimulatedFleet
) -> None:
    expected = expected_policy_decision_rates(fleet_core, simulated_fleet.end)
    assert expected["denied_decisions"].sum() > 0
    assert expected["allowed_decisions"].sum() > 0
    assert_same_values(
        fleet_analytics.query_df(DECISIONS_SQL),
        expected,
        ["organization_id", "policy_id", "sector"],
        DECISION_COLUMNS,
    )


def test_every_fact_row_belongs_to_its_vehicles_tenant(
    fleet_analytics: FleetAnalytics, fleet_core: FleetCore
) -> None:
    tenant = {
        row[0]: row[1]
        for row in fleet_core.vehicles().select("vehicle_id", "organization_id").rows()
    }
    for fact in (
        "fct_alerts",
        "fct_vehicle_commands",
        "fct_policy_decisions",
        "fct_maintenance_records",
    ):
        rows = fleet_analytics.query_df(
            f"SELECT toString(vehicle_id) AS v, toString(organization_id) AS o FROM {fact}"
        ).rows()
        assert rows, fact
        assert all(tenant[v] == o for v, o in rows), fact


# --- asked of an earlier moment ----------------------------------------------------------


def test_aggregates_asked_of_an_earlier_moment_count_only_what_had_happened(
    earlier_marts: EarlierMarts,
    fleet_analytics: FleetAnalytics,
    fleet_core: FleetCore,
    simulated_fleet: SimulatedFleet,
) -> None:
    as_of = earlier_marts.as_of
    for sql, expected, keys, columns in (
        (
            RELIABILITY_SQL,
            expected_reliability(fleet_core, as_of),
            ["organization_id", "manufacturer", "model"],
            RELIABILITY_COLUMNS,
        ),
        (
            ALERTS_SQL,
            expected_alert_response_times(fleet_core, as_of),
            ["organization_id", "alert_type", "severity"],
            ALERT_COLUMNS,
        ),
        (
            COMMANDS_SQL,
            expected_command_performance(fleet_core, as_of),
            ["organization_id", "command_type"],
            COMMAND_COLUMNS,
        ),
        (
            DECISIONS_SQL,
            expected_policy_decision_rates(fleet_core, as_of),
            ["organization_id", "policy_id", "sector"],
            DECISION_COLUMNS,
        ),
    ):
        assert_same_values(
            query(simulated_fleet, earlier_marts.schema, sql), expected, keys, columns
        )

    # The earlier moment really is earlier: fewer hours driven and commands issued than at the end.
    earlier = query(simulated_fleet, earlier_marts.schema, RELIABILITY_SQL)
    final = fleet_analytics.query_df(RELIABILITY_SQL)
    assert earlier["driving_hours"].sum() < final["driving_hours"].sum()
    earlier_commands = query(simulated_fleet, earlier_marts.schema, COMMANDS_SQL)
    assert (
        earlier_commands["commands"].sum()
        < fleet_analytics.query_df(COMMANDS_SQL)["commands"].sum()
    )
