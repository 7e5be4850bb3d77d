{#- Per vehicle up to as_of: driving time and distance of its trips, failures and maintenance. -#}
with vehicles as (
    select vehicle_id, organization_id, fleet_id, manufacturer, model, powertrain
    from {{ ref('int_vehicles_enriched') }}
),

trips as (
    select
        vehicle_id,
        -- A trip still running at as_of counts up to as_of; one that started later not at all.
        dateDiff(
            'millisecond',
            actual_start,
            least(coalesce(actual_end, {{ as_of() }}), {{ as_of() }})
        ) / 3600000.0 as driving_hours,
        -- The Fleet OS writes the distance when the trip ends (aborted ones included).
        if(actual_end <= {{ as_of() }}, coalesce(reported_distance_km, 0), 0) as distance_km
    from {{ ref('int_trips_parsed') }}
    where actual_start is not null and actual_start <= {{ as_of() }}
),

trips_per_vehicle as (
    select
        vehicle_id,
        count() as trip_count,
        sum(driving_hours) as driving_hours_sum,
        sum(distance_km) as distance_km_sum
    from trips
    group by vehicle_id
),

maintenance_per_vehicle as (
    select
        vehicle_id,
        -- A failure is an unscheduled job; scheduled_date is when the vehicle broke down.
        countIf(maintenance_type = 'unscheduled') as failure_count,
        countIf(maintenance_type = 'scheduled') as scheduled_count,
        -- Cost and downtime are known once the job is completed.
        sumIf(cost, completed_date <= {{ as_of() }}) as cost_sum,
        sumIf(downtime_hours, completed_date <= {{ as_of() }}) as downtime_sum,
        sumIf(
            downtime_hours, maintenance_type = 'unscheduled' and completed_date <= {{ as_of() }}
        ) as unscheduled_downtime_sum
    from {{ ref('int_maintenance_records_parsed') }}
    where scheduled_date <= {{ as_of() }}
    group by vehicle_id
)

select
    vehicles.vehicle_id as vehicle_id,
    vehicles.organization_id as organization_id,
    vehicles.fleet_id as fleet_id,
    vehicles.manufacturer as manufacturer,
    vehicles.model as model,
    vehicles.powertrain as powertrain,
    coalesce(trips_per_vehicle.trip_count, 0) as trips_started,
    coalesce(trips_per_vehicle.driving_hours_sum, 0) as driving_hours,
    coalesce(trips_per_vehicle.distance_km_sum, 0) as distance_km,
    coalesce(maintenance_per_vehicle.failure_count, 0) as failures,
    coalesce(maintenance_per_vehicle.scheduled_count, 0) as scheduled_services,
    coalesce(maintenance_per_vehicle.cost_sum, 0) as maintenance_cost,
    coalesce(maintenance_per_vehicle.downtime_sum, 0) as downtime_hours,
    coalesce(maintenance_per_vehicle.unscheduled_downtime_sum, 0) as unscheduled_downtime_hours
from vehicles
left join trips_per_vehicle on vehicles.vehicle_id = trips_per_vehicle.vehicle_id
left join maintenance_per_vehicle on vehicles.vehicle_id = maintenance_per_vehicle.vehicle_id
