{#- Fleets of an organization, one row each, soft-deleted ones too
    (deleted_at set), so the facts that point at them keep their history. -#}
with source as (
    select * from {{ source('fleet_core', 'fleets') }} final
)

select
    fleet_id,
    organization_id,
    name,
    sector,
    configuration,
    status,
    metadata,
    toDateTime64(created_at, 3, 'UTC') as created_at,
    toDateTime64(updated_at, 3, 'UTC') as updated_at,
    toDateTime64(deleted_at, 3, 'UTC') as deleted_at,
    toDateTime64(_extracted_at, 3, 'UTC') as _extracted_at
from source
