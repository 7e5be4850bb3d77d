{#- Vehicles that reported in the 10 minutes before as_of and did not move in them (every
    reading below the 3 km/h moving threshold), with when they last moved. -#}
with states as (
    select * from {{ ref('int_vehicle_states_summarised') }}
),

vehicles as (
    select vehicle_id, organization_id, fleet_id, asset_tag from {{ ref('dim_vehicles') }}
)

select
    vehicles.organization_id as organization_id,
    vehicles.fleet_id as fleet_id,
    states.vehicle_id as vehicle_id,
    vehicles.asset_tag as asset_tag,
    {{ as_of() }} as as_of,
    states.last_seen_at as last_seen_at,
    states.last_latitude as latitude,
    states.last_longitude as longitude,
    states.last_operational_status as operational_status,
    states.points_last_10_minutes as points_last_10_minutes,
    -- NULL: it has not moved for at least the 24 hours the summary looks back.
    states.last_moved_at as last_moved_at,
    dateDiff('second', states.last_moved_at, {{ as_of() }}) / 60.0 as minutes_stationary
from states
inner join vehicles on states.vehicle_id = vehicles.vehicle_id
where states.points_last_10_minutes > 0 and states.max_speed_last_10_minutes_kmh < 3
