{#- One row per trip as driven: scheduled against actual times, and distance, speed, energy
    and load measured from the telemetry recorded during the trip.

    Incremental by the trip's day (its actual start, else its scheduled start). A run rebuilds
    the trips of its window AND of the day before: a trip that crosses midnight is only
    complete once the next day's telemetry is in, so whichever of the two days is built last
    completes it, in any order of days. Trips longer than a day are completed by a full
    refresh. Telemetry is read from the rebuilt trips' first start to their last end only. -#}
{{
    config(
        materialized='incremental',
        incremental_strategy='insert_overwrite',
        on_schema_change='fail',
        engine='MergeTree()',
        partition_by='trip_date',
        order_by='(organization_id, vehicle_id, trip_id)',
    )
}}
{#- Arriving up to five minutes late is on time (the common public-transport convention). -#}
{%- set on_time_minutes = 5 -%}

with trips as (
    select
        *,
        coalesce(actual_start, scheduled_start) as planned_or_actual_start,
        ifNull(toDate(coalesce(actual_start, scheduled_start)), toDate(0)) as trip_date
    from {{ ref('int_trips_parsed') }}
    -- Without window vars an incremental run restarts from the newest day with a started
    -- trip: trips scheduled days ahead must not move that point past unfinished days.
    where {{
        incremental_window(
            'coalesce(actual_start, scheduled_start)',
            lookback='1 day',
            existing_column='if(actual_start is null, toDate(0), trip_date)',
        )
    }}
),

vehicles as (
    select vehicle_id, energy_capacity, energy_capacity_unit
    from {{ ref('dim_vehicles') }}
),

driven as (
    -- -OrNull aggregates are Nullable: a trip without telemetry (cancelled, not started) gets
    -- NULLs from the left join below, not zeros.
    select
        trip_id,
        countOrNull() as telemetry_points,
        sumOrNull(km_to_next) as distance_km,
        sumIfOrNull(interval_s, is_driving = 1) / 3600 as driving_hours,
        maxOrNull(speed_kmh) as max_speed_kmh,
        argMinOrNull(energy_level_percent, (recorded_at, telemetry_id))
            as start_energy_level_percent,
        argMaxOrNull(energy_level_percent, (recorded_at, telemetry_id))
            as end_energy_level_percent,
        sumOrNull(coalesce(energy_drop_percent, 0)) as energy_used_percent,
        sumIfOrNull(
            (load_kg + next_load_kg) / 2 * interval_s,
            load_kg is not null and next_load_kg is not null
        ) / nullIf(sumIfOrNull(interval_s, load_kg is not null and next_load_kg is not null), 0)
            as avg_load_kg,
        sumOrNull(stop_started) as stops,
        countIfOrNull(dtc_count > 0) as readings_with_dtc
    from {{ ref('int_trip_points_matched') }}
    -- Bounds from the window's trips keep the read to their days (partition pruning).
    where recorded_at >= (select min(actual_start) from trips)
        and recorded_at < (
            select max(coalesce(actual_end, {{ as_of() }})) from trips
        )
        and trip_id in (select trip_id from trips)
    group by trip_id
)

select
    trips.trip_id as trip_id,
    trips.organization_id as organization_id,
    trips.fleet_id as fleet_id,
    trips.vehicle_id as vehicle_id,
    trips.route_id as route_id,
    trips.trip_date as trip_date,
    trips.mission_type as mission_type,
    trips.leg as leg,
    trips.status as status,
    trips.scheduled_start as scheduled_start,
    trips.actual_start as actual_start,
    trips.scheduled_end as scheduled_end,
    trips.actual_end as actual_end,
    dateDiff('millisecond', trips.scheduled_start, trips.actual_start) / 60000.0
        as start_delay_minutes,
    dateDiff('millisecond', trips.scheduled_end, trips.actual_end) / 60000.0
        as end_delay_minutes,
    dateDiff('millisecond', trips.scheduled_start, trips.scheduled_end) / 60000.0
        as scheduled_duration_minutes,
    -- An end before the start is a Fleet OS clock or data error (flagged by
    -- assert_trips_end_after_they_start), not a negative duration to average.
    if(
        trips.actual_end >= trips.actual_start,
        dateDiff('millisecond', trips.actual_start, trips.actual_end) / 60000.0,
        null
    ) as duration_minutes,
    if(
        trips.status = 'completed',
        toUInt8(end_delay_minutes <= {{ on_time_minutes }}),
        null
    ) as is_on_time,
    coalesce(driven.telemetry_points, 0) as telemetry_points,
    driven.distance_km as distance_km,
    trips.reported_distance_km as reported_distance_km,
    driven.driving_hours as driving_hours,
    -- Door to door: halts and short stops on the way count, as a passenger feels them.
    if(duration_minutes > 0, driven.distance_km / (duration_minutes / 60), null)
        as avg_speed_kmh,
    driven.max_speed_kmh as max_speed_kmh,
    driven.stops as stops,
    driven.start_energy_level_percent as start_energy_level_percent,
    driven.end_energy_level_percent as end_energy_level_percent,
    driven.energy_used_percent as energy_used_percent,
    driven.energy_used_percent / 100 * vehicles.energy_capacity as energy_used,
    vehicles.energy_capacity_unit as energy_unit,
    if(
        driven.distance_km >= 1,
        driven.energy_used_percent / 100 * vehicles.energy_capacity / driven.distance_km * 100,
        null
    ) as consumption_per_100km,
    trips.planned_load_kg as planned_load_kg,
    driven.avg_load_kg as avg_load_kg,
    driven.readings_with_dtc as readings_with_dtc
from trips
inner join vehicles on trips.vehicle_id = vehicles.vehicle_id
left join driven on trips.trip_id = driven.trip_id
