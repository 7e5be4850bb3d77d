{#- MTBF, distance between failures, cost and downtime per tenant and vehicle model by as_of. -#}
with per_model as (
    select
        organization_id,
        manufacturer,
        model,
        any(powertrain) as model_powertrain,
        count() as vehicle_count,
        sum(trips_started) as trips_sum,
        sum(driving_hours) as driving_hours_sum,
        sum(distance_km) as distance_km_sum,
        sum(failures) as failure_sum,
        sum(scheduled_services) as scheduled_sum,
        sum(maintenance_cost) as cost_sum,
        sum(downtime_hours) as downtime_sum,
        sum(unscheduled_downtime_hours) as unscheduled_downtime_sum
    from {{ ref('int_vehicles_reliability_summed') }}
    group by organization_id, manufacturer, model
)

select
    organization_id,
    manufacturer,
    model,
    model_powertrain as powertrain,
    vehicle_count as vehicles,
    trips_sum as trips_started,
    driving_hours_sum as driving_hours,
    distance_km_sum as distance_km,
    failure_sum as failures,
    scheduled_sum as scheduled_services,
    -- No failure yet: MTBF is unbounded, not zero, so it stays NULL.
    if(failure_sum = 0, null, driving_hours_sum / failure_sum) as mtbf_driving_hours,
    if(failure_sum = 0, null, distance_km_sum / failure_sum) as mean_km_between_failures,
    if(driving_hours_sum = 0, null, failure_sum * 1000 / driving_hours_sum)
        as failures_per_1000_driving_hours,
    cost_sum as maintenance_cost,
    downtime_sum as downtime_hours,
    unscheduled_downtime_sum as unscheduled_downtime_hours
from per_model
