{#- Tenants of the Fleet OS, one row each, soft-deleted ones too
    (deleted_at set), so the facts that point at them keep their history. -#}
with source as (
    select * from {{ source('fleet_core', 'organizations') }} final
)

select
    organization_id,
    name,
    sector,
    configuration,
    entitlements,
    subscription_tier,
    is_active,
    toDateTime64(created_at, 3, 'UTC') as created_at,
    toDateTime64(updated_at, 3, 'UTC') as updated_at,
    toDateTime64(deleted_at, 3, 'UTC') as deleted_at,
    toDateTime64(_extracted_at, 3, 'UTC') as _extracted_at
from source
