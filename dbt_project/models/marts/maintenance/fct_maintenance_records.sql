{#- One row per maintenance job: its type, cost split into parts and the rest, and downtime. -#}
select
    maintenance_id,
    organization_id,
    fleet_id,
    vehicle_id,
    manufacturer,
    model,
    maintenance_type,
    toBool(maintenance_type = 'unscheduled') as is_unscheduled,
    component,
    description,
    status,
    toBool(status = 'completed') as is_completed,
    toDate(scheduled_date) as maintenance_date,
    scheduled_date,
    completed_date,
    dateDiff('millisecond', scheduled_date, completed_date) / 3600000.0 as elapsed_hours,
    downtime_hours,
    cost,
    parts_cost,
    -- Labour, and towing for a breakdown: whatever of the total the parts do not explain.
    if(cost is null, null, cost - parts_cost) as labour_and_other_cost,
    parts_quantity,
    part_numbers,
    performed_by,
    created_at,
    updated_at
from {{ ref('int_maintenance_records_parsed') }}
