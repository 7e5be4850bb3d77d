{#- One row per fleet and UTC day with telemetry: vehicles reporting and active, utilisation,
    availability, distance, incidents and downtime. Rebuilt whole from fct_vehicle_days (a few
    rows per fleet and day), so it follows every incremental run of that fact. -#}
{{ config(engine='MergeTree()', order_by='(organization_id, fleet_id, activity_date)') }}

with vehicle_days as (
    select * from {{ ref('fct_vehicle_days') }}
),

fleets as (
    select fleet_id, vehicle_count from {{ ref('dim_fleets') }}
),

fleet_days as (
    select
        organization_id,
        fleet_id,
        activity_date,
        count() as vehicles_reporting,
        -- A kilometre: GNSS jitter or a yard shunt does not make a vehicle active.
        countIf(vehicle_days.distance_km >= 1) as vehicles_active,
        sum(observed_hours) as observed_hours,
        sum(driving_hours) as driving_hours,
        sum(idle_hours) as idle_hours,
        sum(out_of_service_hours) as out_of_service_hours,
        sum(distance_km) as distance_km,
        sum(stops) as stops,
        sum(breakdowns) as incidents,
        sum(alerts_triggered) as alerts_triggered,
        sum(critical_alerts) as critical_alerts,
        sum(readings_with_dtc) as readings_with_dtc,
        sum(maintenance_downtime_hours) as maintenance_downtime_hours
    from vehicle_days
    group by organization_id, fleet_id, activity_date
)

select
    fleet_days.organization_id as organization_id,
    fleet_days.fleet_id as fleet_id,
    fleet_days.activity_date as activity_date,
    fleets.vehicle_count as vehicles_in_fleet,
    fleet_days.vehicles_reporting as vehicles_reporting,
    fleet_days.vehicles_active as vehicles_active,
    fleet_days.observed_hours as observed_hours,
    fleet_days.driving_hours as driving_hours,
    fleet_days.idle_hours as idle_hours,
    fleet_days.driving_hours + fleet_days.idle_hours as active_hours,
    fleet_days.out_of_service_hours as out_of_service_hours,
    fleet_days.observed_hours - fleet_days.out_of_service_hours as available_hours,
    if(
        fleet_days.observed_hours > 0,
        available_hours / fleet_days.observed_hours,
        null
    ) as availability_rate,
    if(available_hours > 0, active_hours / available_hours, null) as utilisation_rate,
    fleet_days.distance_km as distance_km,
    fleet_days.stops as stops,
    fleet_days.incidents as incidents,
    fleet_days.alerts_triggered as alerts_triggered,
    fleet_days.critical_alerts as critical_alerts,
    fleet_days.readings_with_dtc as readings_with_dtc,
    fleet_days.maintenance_downtime_hours as maintenance_downtime_hours
from fleet_days
inner join fleets on fleet_days.fleet_id = fleets.fleet_id
