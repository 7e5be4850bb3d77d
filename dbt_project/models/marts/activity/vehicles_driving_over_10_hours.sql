{#- Vehicles that drove more than 10 hours in the 24 hours before as_of. -#}
{%- set limit_hours = 10 -%}

select
    organization_id,
    fleet_id,
    vehicle_id,
    asset_tag,
    as_of,
    driving_hours_24h,
    last_seen_at
from {{ ref('int_vehicle_states_attributed') }}
where driving_hours_24h > {{ limit_hours }}
