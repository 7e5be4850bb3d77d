{#- Average daily driving time per vehicle, per fleet, over the complete UTC days before
    as_of's day (a day still running would pull the average down). -#}
select
    organization_id,
    fleet_id,
    min(activity_date) as first_day,
    max(activity_date) as last_day,
    uniqExact(vehicle_id) as vehicles,
    count() as vehicle_days,
    countIf(distance_km >= 1) as active_vehicle_days,
    avg(driving_hours) as avg_daily_driving_hours,
    avgIf(driving_hours, distance_km >= 1) as avg_active_day_driving_hours,
    quantileExact(0.5)(driving_hours) as median_daily_driving_hours,
    max(driving_hours) as max_daily_driving_hours
from {{ ref('fct_vehicle_days') }}
where activity_date < toDate({{ as_of() }})
group by organization_id, fleet_id
