{#- Vehicles that, as of as_of, have driven 4 hours or more since their last rest of at least
    20 minutes (a stationary stretch, or a telemetry gap, of 20 minutes or more). Driving time
    counts short halts at lights and junctions, as a tachograph does. -#}
{%- set limit_hours = 4 -%}

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
    states.driving_hours_since_rest as driving_hours_since_rest,
    -- NULL: no rest in the 24 hours looked back; the driving time is then a lower bound.
    states.last_rest_at as last_rest_at,
    states.last_seen_at as last_seen_at,
    states.last_operational_status as operational_status
from states
inner join vehicles on states.vehicle_id = vehicles.vehicle_id
where states.driving_hours_since_rest >= {{ limit_hours }}
