{#- Fleets, one row per current fleet of an organization. -#}
with source as (
    select * from {{ source('fleet_core', 'fleets') }}
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
    toDateTime64(_extracted_at, 3, 'UTC') as _extracted_at
from source
