{#- Operating policies, one row per current policy version. -#}
with source as (
    select * from {{ source('fleet_core', 'policies') }}
)

select
    policy_id,
    organization_id,
    name,
    version,
    rego_code,
    policy_schema,
    sector,
    environment,
    is_active,
    toDateTime64(effective_from, 3, 'UTC') as effective_from,
    toDateTime64(effective_until, 3, 'UTC') as effective_until,
    created_by,
    toDateTime64(created_at, 3, 'UTC') as created_at,
    toDateTime64(updated_at, 3, 'UTC') as updated_at,
    toDateTime64(_extracted_at, 3, 'UTC') as _extracted_at
from source
