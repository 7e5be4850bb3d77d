{#- Vehicles whose last known battery or fuel level as of as_of is below 20 %: the Fleet OS
    refuses new trips below that reserve, so these need charging or refuelling first. -#}
{%- set low_percent = 20 -%}

select
    organization_id,
    fleet_id,
    vehicle_id,
    asset_tag,
    manufacturer,
    model,
    as_of,
    energy_kind,
    energy_level_percent,
    {{ low_percent }} as threshold_percent,
    last_seen_at,
    latitude,
    longitude,
    operational_status
from {{ ref('vehicle_latest_states') }}
where energy_level_percent < {{ low_percent }}
