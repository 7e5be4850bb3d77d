{#- The Fleet OS's operational alerts, one row per alert and its lifecycle. -#}
with source as (
    select * from {{ source('fleet_core', 'alerts') }}
)

select
    alert_id,
    vehicle_id,
    trip_id,
    alert_type,
    severity,
    message,
    context_data,
    toDateTime64(triggered_at, 3, 'UTC') as triggered_at,
    toDateTime64(acknowledged_at, 3, 'UTC') as acknowledged_at,
    toDateTime64(resolved_at, 3, 'UTC') as resolved_at,
    acknowledged_by,
    resolved_by,
    status,
    toDateTime64(created_at, 3, 'UTC') as created_at,
    toDateTime64(updated_at, 3, 'UTC') as updated_at,
    toDateTime64(_extracted_at, 3, 'UTC') as _extracted_at
from source
