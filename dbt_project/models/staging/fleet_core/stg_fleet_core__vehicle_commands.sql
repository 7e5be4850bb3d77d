{#- Commands sent to vehicles, one row per command and its outcome. -#}
with source as (
    select * from {{ source('fleet_core', 'vehicle_commands') }}
)

select
    command_id,
    vehicle_id,
    command_type,
    parameters,
    status,
    toDateTime64(issued_at, 3, 'UTC') as issued_at,
    toDateTime64(executed_at, 3, 'UTC') as executed_at,
    toDateTime64(expires_at, 3, 'UTC') as expires_at,
    issued_by,
    response_data,
    priority,
    toDateTime64(created_at, 3, 'UTC') as created_at,
    toDateTime64(updated_at, 3, 'UTC') as updated_at,
    toDateTime64(_extracted_at, 3, 'UTC') as _extracted_at
from source
