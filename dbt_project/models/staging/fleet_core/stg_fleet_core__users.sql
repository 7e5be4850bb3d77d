{#- Fleet OS users, one row per current user (no credentials). -#}
with source as (
    select * from {{ source('fleet_core', 'users') }}
)

select
    user_id,
    organization_id,
    username,
    email,
    roles,
    permissions,
    is_active,
    toDateTime64(last_login, 3, 'UTC') as last_login,
    toDateTime64(created_at, 3, 'UTC') as created_at,
    toDateTime64(updated_at, 3, 'UTC') as updated_at,
    toDateTime64(_extracted_at, 3, 'UTC') as _extracted_at
from source
