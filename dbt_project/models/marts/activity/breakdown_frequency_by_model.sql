{#- How often each vehicle model breaks down, per tenant: breakdowns (unscheduled maintenance
    opened on a day the vehicle reported telemetry) against the driving time, distance and
    vehicle-days the telemetry measured over the same days, up to as_of. -#}
with vehicle_days as (
    select * from {{ ref('fct_vehicle_days') }}
    where activity_date <= toDate({{ as_of() }})
),

vehicles as (
    select vehicle_id, manufacturer, model, powertrain from {{ ref('dim_vehicles') }}
)

select
    vehicle_days.organization_id as organization_id,
    vehicles.manufacturer as manufacturer,
    vehicles.model as model,
    any(vehicles.powertrain) as powertrain,
    uniqExact(vehicle_days.vehicle_id) as vehicles,
    count() as vehicle_days,
    sum(vehicle_days.driving_hours) as driving_hours,
    sum(vehicle_days.distance_km) as distance_km,
    sum(vehicle_days.breakdowns) as breakdowns,
    if(driving_hours > 0, breakdowns * 1000 / driving_hours, null)
        as breakdowns_per_1000_driving_hours,
    if(distance_km > 0, breakdowns * 10000 / distance_km, null) as breakdowns_per_10000_km,
    breakdowns * 30 / vehicle_days as breakdowns_per_vehicle_month
from vehicle_days
inner join vehicles on vehicle_days.vehicle_id = vehicles.vehicle_id
group by organization_id, manufacturer, model
