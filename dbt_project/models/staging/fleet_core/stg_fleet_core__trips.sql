{#- Trips, one row per scheduled, running or finished trip. -#}
with source as (
    select * from {{ source('fleet_core', 'trips') }}
)

select
    trip_id,
    vehicle_id,
    route_id,
    mission_type,
    status,
    origin_latitude,
    origin_longitude,
    destination_latitude,
    destination_longitude,
    toDateTime64(scheduled_start, 3, 'UTC') as scheduled_start,
    toDateTime64(actual_start, 3, 'UTC') as actual_start,
    toDateTime64(scheduled_end, 3, 'UTC') as scheduled_end,
    toDateTime64(actual_end, 3, 'UTC') as actual_end,
    trip_parameters,
    telemetry_summary,
    toDateTime64(created_at, 3, 'UTC') as created_at,
    toDateTime64(updated_at, 3, 'UTC') as updated_at,
    toDateTime64(_extracted_at, 3, 'UTC') as _extracted_at
from source
