{#- Maintenance jobs with their tenant and the parts JSON summed into quantities and costs. -#}
with records as (
    select * from {{ ref('stg_fleet_core__maintenance_records') }}
),

vehicles as (
    select vehicle_id, organization_id, fleet_id, manufacturer, model
    from {{ ref('int_vehicles_enriched') }}
),

parsed as (
    select
        *,
        JSONExtractArrayRaw(coalesce(parts_used, '[]')) as parts
    from records
)

select
    parsed.maintenance_id as maintenance_id,
    vehicles.organization_id as organization_id,
    vehicles.fleet_id as fleet_id,
    parsed.vehicle_id as vehicle_id,
    vehicles.manufacturer as manufacturer,
    vehicles.model as model,
    parsed.maintenance_type as maintenance_type,
    parsed.component as component,
    parsed.description as description,
    parsed.status as status,
    parsed.scheduled_date as scheduled_date,
    parsed.completed_date as completed_date,
    parsed.performed_by as performed_by,
    parsed.cost as cost,
    parsed.downtime_hours as downtime_hours,
    arraySum(arrayMap(p -> JSONExtractInt(p, 'quantity'), parsed.parts)) as parts_quantity,
    arraySum(
        arrayMap(
            p -> JSONExtractInt(p, 'quantity') * JSONExtractFloat(p, 'unit_cost'), parsed.parts
        )
    ) as parts_cost,
    arrayMap(p -> JSONExtractString(p, 'part_number'), parsed.parts) as part_numbers,
    parsed.created_at as created_at,
    parsed.updated_at as updated_at
from parsed
inner join vehicles on parsed.vehicle_id = vehicles.vehicle_id
