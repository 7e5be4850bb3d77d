{#- Trips with their tenant and the Fleet OS's JSON trip summary and parameters as columns. -#}
with trips as (
    select * from {{ ref('stg_fleet_core__trips') }}
),

vehicles as (
    select vehicle_id, organization_id, fleet_id from {{ ref('int_vehicles_enriched') }}
)

select
    trips.trip_id as trip_id,
    vehicles.organization_id as organization_id,
    vehicles.fleet_id as fleet_id,
    trips.vehicle_id as vehicle_id,
    trips.route_id as route_id,
    trips.mission_type as mission_type,
    trips.status as status,
    nullIf(JSONExtractString(trips.trip_parameters, 'leg'), '') as leg,
    JSONExtract(trips.trip_parameters, 'load_kg', 'Nullable(Float64)') as planned_load_kg,
    trips.scheduled_start as scheduled_start,
    trips.actual_start as actual_start,
    trips.scheduled_end as scheduled_end,
    trips.actual_end as actual_end,
    JSONExtract(trips.telemetry_summary, 'distance_km', 'Nullable(Float64)')
        as reported_distance_km,
    JSONExtract(trips.telemetry_summary, 'energy_used_percent', 'Nullable(Float64)')
        as reported_energy_used_percent
from trips
inner join vehicles on trips.vehicle_id = vehicles.vehicle_id
