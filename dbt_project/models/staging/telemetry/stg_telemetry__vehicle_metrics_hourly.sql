{#- Hourly per-vehicle metrics of the hot path, one row per vehicle and hour. -#}
with source as (
    select * from {{ source('telemetry', 'vehicle_metrics_hourly') }}
)

select
    vehicle_id,
    toDateTime64(hour, 3, 'UTC') as hour_start,
    telemetry_count,
    avg_speed as avg_speed_kmh,
    max_speed as max_speed_kmh,
    avg_battery as avg_battery_percent,
    min_battery as min_battery_percent,
    avg_fuel as avg_fuel_percent,
    min_fuel as min_fuel_percent,
    rows_with_dtc
from source
