{#- One row per command sent to a vehicle with its tenant, outcome and latency. -#}
with commands as (
    select * from {{ ref('stg_fleet_core__vehicle_commands') }}
),

vehicles as (
    select vehicle_id, organization_id, fleet_id from {{ ref('int_vehicles_enriched') }}
)

select
    commands.command_id as command_id,
    vehicles.organization_id as organization_id,
    vehicles.fleet_id as fleet_id,
    commands.vehicle_id as vehicle_id,
    commands.command_type as command_type,
    commands.priority as priority,
    commands.status as status,
    toBool(commands.status = 'completed') as is_success,
    toDate(commands.issued_at) as command_date,
    commands.issued_at as issued_at,
    commands.executed_at as executed_at,
    commands.expires_at as expires_at,
    dateDiff('millisecond', commands.issued_at, commands.executed_at) / 1000.0 as latency_s,
    nullIf(JSONExtractString(commands.response_data, 'error'), '') as error,
    toUUIDOrNull(JSONExtractString(commands.parameters, 'trip_id')) as trip_id,
    commands.issued_by as issued_by
from commands
inner join vehicles on commands.vehicle_id = vehicles.vehicle_id
