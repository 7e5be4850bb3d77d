{#- Energy consumption and load per fleet and vehicle model, measured from telemetry up to
    as_of, against the model's nominal figures (vehicle profile: nominal consumption at a
    typical duty cycle, maximum payload). A ratio above 1 uses more than the data sheet. -#}
with vehicle_days as (
    select * from {{ ref('fct_vehicle_days') }}
    where activity_date <= toDate({{ as_of() }})
),

vehicles as (
    select
        vehicle_id, manufacturer, model, powertrain, nominal_consumption, consumption_unit,
        max_load_kg
    from {{ ref('dim_vehicles') }}
)

select
    vehicle_days.organization_id as organization_id,
    vehicle_days.fleet_id as fleet_id,
    vehicles.manufacturer as manufacturer,
    vehicles.model as model,
    any(vehicles.powertrain) as powertrain,
    uniqExact(vehicle_days.vehicle_id) as vehicles,
    sum(vehicle_days.distance_km) as distance_km,
    sum(vehicle_days.driving_hours) as driving_hours,
    sum(vehicle_days.driving_energy_used) as driving_energy_used,
    any(vehicle_days.energy_unit) as energy_unit,
    if(
        sum(vehicle_days.distance_km) >= 1,
        sum(vehicle_days.driving_energy_used) / sum(vehicle_days.distance_km) * 100,
        null
    ) as avg_consumption_per_100km,
    any(vehicles.nominal_consumption) as nominal_consumption,
    any(vehicles.consumption_unit) as consumption_unit,
    avg_consumption_per_100km / nullIf(nominal_consumption, 0) as consumption_vs_nominal,
    -- Each day's time-weighted mean load, weighted again by that day's driving time.
    sumIf(
        vehicle_days.avg_load_kg * vehicle_days.driving_hours,
        vehicle_days.avg_load_kg is not null
    ) / nullIf(sumIf(vehicle_days.driving_hours, vehicle_days.avg_load_kg is not null), 0)
        as avg_load_kg,
    any(vehicles.max_load_kg) as max_load_kg,
    avg_load_kg / nullIf(max_load_kg, 0) as load_factor
from vehicle_days
inner join vehicles on vehicle_days.vehicle_id = vehicles.vehicle_id
group by organization_id, fleet_id, manufacturer, model
