{#- Vehicles that drove more than 10 hours in the 24 hours before as_of. -#}
{%- set limit_hours = 10 -%}

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
    states.driving_hours_24h as driving_hours_24h,
    states.last_seen_at as last_seen_at
from states
inner join vehicles on states.vehicle_id = vehicles.vehicle_id
where states.driving_hours_24h > {{ limit_hours }}
