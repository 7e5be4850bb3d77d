{#- Every vehicle's (in service at as_of) last known location and status as of as_of: from its latest point when it
    reported in the last 24 hours, else from the end of its latest day with telemetry. A
    vehicle that never reported has NULLs (join_use_nulls), not zeros. -#}
{{ config(query_settings={'join_use_nulls': 1}) }}

with vehicles as (
    select
        vehicle_id, organization_id, fleet_id, asset_tag, manufacturer, model, energy_kind
    from {{ ref('dim_vehicles') }}
    -- Vehicles that exist at as_of: one decommissioned since still answers for then.
    where deleted_at is null or deleted_at > {{ as_of() }}
),

recent as (
    select * from {{ ref('int_vehicle_states_summarised') }}
),

-- Days before as_of's day end before as_of, so their last point is known at as_of.
earlier as (
    select
        vehicle_id,
        max(last_seen_at) as last_seen_at,
        argMax(last_latitude, activity_date) as last_latitude,
        argMax(last_longitude, activity_date) as last_longitude,
        argMax(last_operational_status, activity_date) as last_operational_status,
        argMax(last_energy_level_percent, activity_date) as last_energy_level_percent
    from {{ ref('fct_vehicle_days') }}
    where activity_date < toDate({{ as_of() }})
    group by vehicle_id
)

select
    vehicles.organization_id as organization_id,
    vehicles.fleet_id as fleet_id,
    vehicles.vehicle_id as vehicle_id,
    vehicles.asset_tag as asset_tag,
    vehicles.manufacturer as manufacturer,
    vehicles.model as model,
    {{ as_of() }} as as_of,
    recent.vehicle_id is not null as reported_last_24_hours,
    if(reported_last_24_hours, recent.last_seen_at, earlier.last_seen_at) as last_seen_at,
    if(reported_last_24_hours, recent.last_latitude, earlier.last_latitude) as latitude,
    if(reported_last_24_hours, recent.last_longitude, earlier.last_longitude) as longitude,
    if(
        reported_last_24_hours,
        recent.last_operational_status,
        earlier.last_operational_status
    ) as operational_status,
    if(reported_last_24_hours, recent.last_speed_kmh, null) as speed_kmh,
    vehicles.energy_kind as energy_kind,
    if(
        reported_last_24_hours,
        recent.last_energy_level_percent,
        earlier.last_energy_level_percent
    ) as energy_level_percent,
    dateDiff('second', last_seen_at, {{ as_of() }}) / 60.0 as minutes_since_seen
from vehicles
left join recent on vehicles.vehicle_id = recent.vehicle_id
left join earlier on vehicles.vehicle_id = earlier.vehicle_id
