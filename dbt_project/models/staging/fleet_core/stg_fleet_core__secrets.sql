{#- Secret metadata, one row per current secret (no values). -#}
with source as (
    select * from {{ source('fleet_core', 'secrets') }}
)

select
    secret_id,
    organization_id,
    secret_name,
    secret_type,
    encryption_key_id,
    toDateTime64(expires_at, 3, 'UTC') as expires_at,
    created_by,
    access_policy,
    toDateTime64(created_at, 3, 'UTC') as created_at,
    toDateTime64(updated_at, 3, 'UTC') as updated_at,
    toDateTime64(_extracted_at, 3, 'UTC') as _extracted_at
from source
