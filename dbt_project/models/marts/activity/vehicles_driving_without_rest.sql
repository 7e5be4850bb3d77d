{#- Vehicles that, as of as_of, have driven 4 hours or more since their last rest of at least
    20 minutes (a stationary stretch, or a telemetry gap, of 20 minutes or more). Driving time
    counts short halts at lights and junctions, as a tachograph does. -#}
{%- set limit_hours = 4 -%}

select
    organization_id,
    fleet_id,
    vehicle_id,
    asset_tag,
    as_of,
    driving_hours_since_rest,
    -- NULL: no rest in the 24 hours looked back; the driving time is then a lower bound.
    last_rest_at,
    last_seen_at,
    last_operational_status as operational_status
from {{ ref('int_vehicle_states_attributed') }}
where driving_hours_since_rest >= {{ limit_hours }}
