{#- One row per vehicle that reported in the 24 hours before as_of: its latest point, when it
    last moved, and its driving time in those 24 hours and since its last rest.

    Only that day of points is read (the partitioned point table prunes the rest), so the
    time-relative questions cost the same whatever the history. Intervals are clipped to the
    window: a point's interval [recorded_at, next point) counts only the part inside
    (as_of - 24 h, as_of]. A rest is a stationary stretch of 20 minutes or more, or a
    telemetry gap of 20 minutes or more (see int_telemetry_points_sessionised). -#}
{#- A table, rebuilt in every run: four marts and its tests read it, and as a view each of
    them would sessionise the day of points again. -#}
{{ config(materialized='table') }}
{%- set rest_s = 1200 -%}

with points as (
    select
        vehicle_id,
        telemetry_id,
        recorded_at,
        latitude,
        longitude,
        speed_kmh,
        operational_status,
        energy_level_percent,
        battery_level_percent,
        fuel_level_percent,
        is_moving,
        is_driving,
        -- The part of the point's interval [recorded_at, next point) inside the window.
        greatest(
            dateDiff(
                'millisecond',
                greatest(recorded_at, {{ as_of() }} - interval 24 hour),
                least(
                    recorded_at + toIntervalMillisecond(toInt64(interval_s * 1000)),
                    {{ as_of() }}
                )
            ),
            0
        ) / 1000.0 as window_interval_s,
        in_rest = 1 or seconds_since_previous >= {{ rest_s }} as ends_rest
    from {{ ref('int_telemetry_points_sessionised') }}
    -- Ten minutes more than a day: the interval of the last point before the window (at most
    -- the 10-minute session gap long) may reach into it.
    where recorded_at > {{ as_of() }} - interval 24 hour - interval 10 minute
        and recorded_at <= {{ as_of() }}
),

-- The latest rest seen up to as_of: a resting point, or a point right after a long gap (the
-- unit was off or out of coverage). An aggregate joined back rather than a window over the
-- vehicle: the window sorted the whole day in memory (2.9 GB for a 17 M-point day), the
-- aggregate holds a row per vehicle.
rests as (
    select vehicle_id, max(if(ends_rest, recorded_at, null)) as rest_ended_at
    from points
    group by vehicle_id
),

per_vehicle as (
    select
        vehicle_id,
        max(recorded_at) as last_seen_at,
        argMax(latitude, (recorded_at, telemetry_id)) as last_latitude,
        argMax(longitude, (recorded_at, telemetry_id)) as last_longitude,
        argMax(speed_kmh, (recorded_at, telemetry_id)) as last_speed_kmh,
        argMax(operational_status, (recorded_at, telemetry_id)) as last_operational_status,
        argMax(energy_level_percent, (recorded_at, telemetry_id)) as last_energy_level_percent,
        argMax(battery_level_percent, (recorded_at, telemetry_id)) as last_battery_level_percent,
        argMax(fuel_level_percent, (recorded_at, telemetry_id)) as last_fuel_level_percent,
        maxIfOrNull(recorded_at, is_moving = 1) as last_moved_at,
        any(rest_ended_at) as last_rest_at,
        sumIf(window_interval_s, is_driving = 1) / 3600 as driving_hours_24h,
        -- Driving since the last rest, or since the window opened when none is in it.
        sumIf(
            window_interval_s,
            is_driving = 1
            and recorded_at >= ifNull(rest_ended_at, toDateTime64(0, 3, 'UTC'))
        ) / 3600 as driving_hours_since_rest,
        countIf(recorded_at > {{ as_of() }} - interval 10 minute) as points_last_10_minutes,
        maxIfOrNull(speed_kmh, recorded_at > {{ as_of() }} - interval 10 minute)
            as max_speed_last_10_minutes_kmh
    from points
    inner join rests using (vehicle_id)
    group by vehicle_id
)

select *
from per_vehicle
where last_seen_at > {{ as_of() }} - interval 24 hour
