{#- Vehicle certificates, one row per certificate (metadata only). -#}
with source as (
    select * from {{ source('fleet_core', 'certificates') }}
)

select
    certificate_id,
    vehicle_id,
    certificate_type,
    toDateTime64(issued_at, 3, 'UTC') as issued_at,
    toDateTime64(expires_at, 3, 'UTC') as expires_at,
    issuer,
    subject,
    is_revoked,
    toDateTime64(revoked_at, 3, 'UTC') as revoked_at,
    toDateTime64(created_at, 3, 'UTC') as created_at,
    toDateTime64(updated_at, 3, 'UTC') as updated_at,
    toDateTime64(_extracted_at, 3, 'UTC') as _extracted_at
from source
