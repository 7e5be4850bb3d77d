{#- Vehicles with their last reported state, one row each, soft-deleted ones too
    (deleted_at set), so the facts that point at them keep their history. -#}
with source as (
    select * from {{ source('fleet_core', 'vehicles') }} final
)

select
    vehicle_id,
    fleet_id,
    asset_tag,
    manufacturer,
    model,
    serial_number,
    vehicle_profile,
    current_status,
    current_latitude,
    current_longitude,
    toDateTime64(last_seen, 3, 'UTC') as last_seen,
    capabilities,
    sensor_config,
    toDateTime64(created_at, 3, 'UTC') as created_at,
    toDateTime64(updated_at, 3, 'UTC') as updated_at,
    toDateTime64(deleted_at, 3, 'UTC') as deleted_at,
    toDateTime64(_extracted_at, 3, 'UTC') as _extracted_at
from source
