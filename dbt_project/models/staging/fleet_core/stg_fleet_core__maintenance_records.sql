{#- Maintenance jobs, one row per scheduled or unscheduled job. -#}
with source as (
    select * from {{ source('fleet_core', 'maintenance_records') }}
)

select
    maintenance_id,
    vehicle_id,
    maintenance_type,
    component,
    description,
    toDateTime64(scheduled_date, 3, 'UTC') as scheduled_date,
    toDateTime64(completed_date, 3, 'UTC') as completed_date,
    performed_by,
    parts_used,
    cost,
    downtime_hours,
    diagnostic_results,
    status,
    toDateTime64(created_at, 3, 'UTC') as created_at,
    toDateTime64(updated_at, 3, 'UTC') as updated_at,
    toDateTime64(_extracted_at, 3, 'UTC') as _extracted_at
from source
