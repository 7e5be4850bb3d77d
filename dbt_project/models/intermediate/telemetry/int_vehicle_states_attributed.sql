{#- The state of every vehicle that reported in the 24 hours before as_of, with its tenant,
    fleet and asset tag: what the time-relative questions (stationary, driving without rest,
    over 10 hours) each filter. -#}
with states as (
    select * from {{ ref('int_vehicle_states_summarised') }}
),

vehicles as (
    select vehicle_id, organization_id, fleet_id, asset_tag
    from {{ ref('int_vehicles_enriched') }}
)

select
    vehicles.organization_id as organization_id,
    vehicles.fleet_id as fleet_id,
    states.vehicle_id as vehicle_id,
    vehicles.asset_tag as asset_tag,
    {{ as_of() }} as as_of,
    states.last_seen_at as last_seen_at,
    states.last_latitude as last_latitude,
    states.last_longitude as last_longitude,
    states.last_operational_status as last_operational_status,
    states.last_moved_at as last_moved_at,
    states.last_rest_at as last_rest_at,
    states.driving_hours_24h as driving_hours_24h,
    states.driving_hours_since_rest as driving_hours_since_rest,
    states.points_last_10_minutes as points_last_10_minutes,
    states.max_speed_last_10_minutes_kmh as max_speed_last_10_minutes_kmh
from states
inner join vehicles on states.vehicle_id = vehicles.vehicle_id
