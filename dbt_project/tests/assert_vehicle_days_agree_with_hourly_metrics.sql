-- Two independent paths to the same numbers: the hot path's hourly metrics are computed at
-- load time from the raw rows, the vehicle-days through staging and the point model. Counts,
-- extremes and DTC readings must agree exactly, or the point model lost, duplicated or
-- misdated points. The newest built day is left out: an hour loaded between the model and
-- this test would make it differ for a moment.
with days as (
    select * from {{ ref('fct_vehicle_days') }}
    where activity_date < (select max(activity_date) from {{ ref('fct_vehicle_days') }})
),

hourly as (
    select
        vehicle_id,
        toDate(hour_start) as activity_date,
        sum(telemetry_count) as telemetry_points,
        max(max_speed_kmh) as max_speed_kmh,
        min(min_battery_percent) as min_battery_percent,
        min(min_fuel_percent) as min_fuel_percent,
        sum(rows_with_dtc) as readings_with_dtc
    from {{ ref('stg_telemetry__vehicle_metrics_hourly') }}
    group by vehicle_id, activity_date
)

select
    days.vehicle_id as vehicle_id,
    days.activity_date as activity_date,
    days.telemetry_points as day_points,
    hourly.telemetry_points as hourly_points
from days
left join hourly
    on days.vehicle_id = hourly.vehicle_id and days.activity_date = hourly.activity_date
where days.telemetry_points != hourly.telemetry_points
    or days.max_speed_kmh != hourly.max_speed_kmh
    or not (days.min_battery_percent <=> hourly.min_battery_percent)
    or not (days.min_fuel_percent <=> hourly.min_fuel_percent)
    or days.readings_with_dtc != hourly.readings_with_dtc
