{#- The policy decision log, one row per ALLOW or DENY. -#}
with source as (
    select * from {{ source('fleet_core', 'policy_decisions') }}
)

select
    decision_id,
    policy_id,
    vehicle_id,
    trip_id,
    action,
    decision,
    reason,
    constraints,
    context,
    toDateTime64(decided_at, 3, 'UTC') as decided_at,
    toDateTime64(created_at, 3, 'UTC') as created_at,
    toDateTime64(updated_at, 3, 'UTC') as updated_at,
    toDateTime64(_extracted_at, 3, 'UTC') as _extracted_at
from source
