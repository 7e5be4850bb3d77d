{#- Planned routes, one row each, soft-deleted ones too
    (deleted_at set), so the facts that point at them keep their history. -#}
with source as (
    select * from {{ source('fleet_core', 'routes') }} final
)

select
    route_id,
    organization_id,
    name,
    waypoints,
    distance_km,
    estimated_duration_minutes,
    constraints,
    optimization_params,
    created_by,
    status,
    toDateTime64(created_at, 3, 'UTC') as created_at,
    toDateTime64(updated_at, 3, 'UTC') as updated_at,
    toDateTime64(deleted_at, 3, 'UTC') as deleted_at,
    toDateTime64(_extracted_at, 3, 'UTC') as _extracted_at
from source
