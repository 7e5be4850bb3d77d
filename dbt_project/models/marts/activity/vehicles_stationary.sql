{#- Vehicles that reported in the 10 minutes before as_of and did not move in them (every
    reading below the 3 km/h moving threshold), with when they last moved. -#}
select
    organization_id,
    fleet_id,
    vehicle_id,
    asset_tag,
    as_of,
    last_seen_at,
    last_latitude as latitude,
    last_longitude as longitude,
    last_operational_status as operational_status,
    points_last_10_minutes,
    -- NULL: it has not moved for at least the 24 hours the summary looks back.
    last_moved_at,
    dateDiff('second', last_moved_at, as_of) / 60.0 as minutes_stationary
from {{ ref('int_vehicle_states_attributed') }}
where points_last_10_minutes > 0 and max_speed_last_10_minutes_kmh < 3
