{#- One row per vehicle and UTC day with telemetry: distance, time by activity, stops, speed,
    energy, diagnostic codes, alerts, breakdowns and maintenance downtime, and where the day
    ended. Incremental by day: a run rebuilds exactly the days of its window (insert_overwrite
    swaps whole day partitions), so re-running a day is idempotent and a day-by-day build
    equals a full refresh. -#}
{{
    config(
        materialized='incremental',
        incremental_strategy='insert_overwrite',
        on_schema_change='fail',
        engine='MergeTree()',
        partition_by='activity_date',
        order_by='(organization_id, vehicle_id, activity_date)',
    )
}}

with points as (
    select *
    from {{ ref('int_telemetry_points_sessionised') }}
    where {{ incremental_window('recorded_at', existing_column='activity_date') }}
),

vehicles as (
    select vehicle_id, organization_id, fleet_id, energy_kind, energy_capacity, energy_capacity_unit
    from {{ ref('dim_vehicles') }}
),

alerts as (
    select
        vehicle_id,
        toDate(triggered_at) as activity_date,
        count() as alerts_triggered,
        countIf(severity = 'critical') as critical_alerts
    from {{ ref('stg_fleet_core__alerts') }}
    where {{ incremental_window('triggered_at', existing_column='activity_date') }}
    group by vehicle_id, activity_date
),

maintenance as (
    -- Each job split over the days it kept the vehicle off the road: from its start to its
    -- completion, or to as_of while it is still open.
    select
        vehicle_id,
        activity_date,
        sum(
            dateDiff(
                'millisecond',
                greatest(started_at, day_start),
                least(ended_at, day_start + interval 1 day)
            )
        ) / 3600000.0 as maintenance_downtime_hours,
        countIf(maintenance_type = 'unscheduled' and toDate(started_at) = activity_date)
            as breakdowns
    from (
        select
            vehicle_id,
            maintenance_type,
            assumeNotNull(scheduled_date) as started_at,
            least(coalesce(completed_date, {{ as_of() }}), {{ as_of() }}) as ended_at,
            arrayJoin(
                arrayMap(
                    offset -> toDate(started_at) + offset,
                    range(toUInt32(dateDiff('day', toDate(started_at), toDate(ended_at)) + 1))
                )
            ) as activity_date,
            toDateTime64(activity_date, 3, 'UTC') as day_start
        from {{ ref('stg_fleet_core__maintenance_records') }}
        where scheduled_date <= {{ as_of() }}
    )
    where {{ incremental_window('day_start', existing_column='activity_date') }}
    group by vehicle_id, activity_date
),

days as (
    select
        vehicle_id,
        recorded_date as activity_date,
        count() as telemetry_points,
        min(recorded_at) as first_seen_at,
        max(recorded_at) as last_seen_at,
        -- Each point stands for the interval to the next one (sample and hold), so time sums
        -- are exact whatever the sampling rate; gaps over the session limit count as nothing.
        sum(interval_s) / 3600 as observed_hours,
        sumIf(interval_s, is_driving = 1) / 3600 as driving_hours,
        sumIf(interval_s, is_driving = 0 and operational_status in ('idle', 'driving')) / 3600
            as idle_hours,
        sumIf(interval_s, is_driving = 0 and operational_status in ('charging', 'refueling'))
            / 3600 as charging_hours,
        sumIf(interval_s, is_driving = 0 and operational_status = 'parked') / 3600
            as parked_hours,
        sumIf(interval_s, is_driving = 0 and operational_status in ('maintenance', 'fault'))
            / 3600 as out_of_service_hours,
        sum(km_to_next) as distance_km,
        sum(stop_started) as stops,
        sum(rest_started) as rests,
        countIf(gap_before = 1 and seconds_since_previous is not null) as telemetry_gaps,
        -- Time-weighted means (trapezoid over each interval): irregular sampling, late or
        -- missing points do not bias them the way a plain mean of readings would.
        sumIf((speed_kmh + next_speed_kmh) / 2 * interval_s, is_driving = 1)
            / nullIf(sumIf(interval_s, is_driving = 1), 0) as avg_speed_kmh,
        max(speed_kmh) as max_speed_kmh,
        min(battery_level_percent) as min_battery_percent,
        min(fuel_level_percent) as min_fuel_percent,
        min(energy_level_percent) as min_energy_level_percent,
        sumIf(
            (energy_level_percent + next_energy_level_percent) / 2 * interval_s,
            next_energy_level_percent is not null and energy_level_percent is not null
        ) / nullIf(
            sumIf(
                interval_s,
                next_energy_level_percent is not null and energy_level_percent is not null
            ),
            0
        ) as avg_energy_level_percent,
        sum(coalesce(energy_drop_percent, 0)) as energy_used_percent,
        sumIf(coalesce(energy_drop_percent, 0), is_driving = 1) as driving_energy_used_percent,
        sumIf(
            (load_kg + next_load_kg) / 2 * interval_s,
            is_driving = 1 and load_kg is not null and next_load_kg is not null
        ) / nullIf(
            sumIf(interval_s, is_driving = 1 and load_kg is not null and next_load_kg is not null),
            0
        ) as avg_load_kg,
        countIf(dtc_count > 0) as readings_with_dtc,
        sum(dtc_count) as dtc_reported,
        arraySort(groupUniqArrayArray(diagnostic_codes)) as distinct_dtc_codes,
        argMax(latitude, (recorded_at, telemetry_id)) as last_latitude,
        argMax(longitude, (recorded_at, telemetry_id)) as last_longitude,
        argMax(operational_status, (recorded_at, telemetry_id)) as last_operational_status,
        argMax(energy_level_percent, (recorded_at, telemetry_id)) as last_energy_level_percent
    from points
    group by vehicle_id, activity_date
)

select
    vehicles.organization_id as organization_id,
    vehicles.fleet_id as fleet_id,
    days.vehicle_id as vehicle_id,
    days.activity_date as activity_date,
    days.telemetry_points as telemetry_points,
    days.first_seen_at as first_seen_at,
    days.last_seen_at as last_seen_at,
    days.observed_hours as observed_hours,
    days.driving_hours as driving_hours,
    days.idle_hours as idle_hours,
    days.charging_hours as charging_hours,
    days.parked_hours as parked_hours,
    days.out_of_service_hours as out_of_service_hours,
    days.distance_km as distance_km,
    days.stops as stops,
    days.rests as rests,
    days.telemetry_gaps as telemetry_gaps,
    days.avg_speed_kmh as avg_speed_kmh,
    days.max_speed_kmh as max_speed_kmh,
    vehicles.energy_kind as energy_kind,
    days.min_battery_percent as min_battery_percent,
    days.min_fuel_percent as min_fuel_percent,
    days.min_energy_level_percent as min_energy_level_percent,
    days.avg_energy_level_percent as avg_energy_level_percent,
    days.energy_used_percent as energy_used_percent,
    days.energy_used_percent / 100 * vehicles.energy_capacity as energy_used,
    days.driving_energy_used_percent / 100 * vehicles.energy_capacity as driving_energy_used,
    vehicles.energy_capacity_unit as energy_unit,
    -- Energy used while driving per distance driven, comparable to the model's nominal figure;
    -- under a kilometre the ratio is noise.
    if(
        days.distance_km >= 1,
        days.driving_energy_used_percent / 100 * vehicles.energy_capacity
        / days.distance_km * 100,
        null
    ) as consumption_per_100km,
    days.avg_load_kg as avg_load_kg,
    days.readings_with_dtc as readings_with_dtc,
    days.dtc_reported as dtc_reported,
    days.distinct_dtc_codes as distinct_dtc_codes,
    coalesce(alerts.alerts_triggered, 0) as alerts_triggered,
    coalesce(alerts.critical_alerts, 0) as critical_alerts,
    coalesce(maintenance.breakdowns, 0) as breakdowns,
    coalesce(maintenance.maintenance_downtime_hours, 0) as maintenance_downtime_hours,
    days.last_latitude as last_latitude,
    days.last_longitude as last_longitude,
    days.last_operational_status as last_operational_status,
    days.last_energy_level_percent as last_energy_level_percent
from days
inner join vehicles on days.vehicle_id = vehicles.vehicle_id
left join alerts
    on days.vehicle_id = alerts.vehicle_id and days.activity_date = alerts.activity_date
left join maintenance
    on days.vehicle_id = maintenance.vehicle_id and days.activity_date = maintenance.activity_date
