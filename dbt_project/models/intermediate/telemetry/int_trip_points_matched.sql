{#- Telemetry points matched to the trip their vehicle was driving: same vehicle, recorded in
    [actual_start, actual_end) of the trip (a trip still running at as_of is open until as_of).
    An ASOF join finds each point's latest trip start, so no vehicle's points are ever paired
    with all its trips; a vehicle drives one trip at a time, so that trip is the only
    candidate. Readers filter on recorded_at, which ClickHouse applies before the join. -#}
with trips as (
    select
        trip_id,
        vehicle_id,
        assumeNotNull(actual_start) as started_at,
        coalesce(actual_end, {{ as_of() }}) as matched_until
    from {{ ref('stg_fleet_core__trips') }}
    where actual_start is not null
),

points as (
    select
        vehicle_id,
        telemetry_id,
        recorded_at,
        speed_kmh,
        next_speed_kmh,
        interval_s,
        km_to_next,
        energy_level_percent,
        energy_drop_percent,
        load_kg,
        next_load_kg,
        is_driving,
        stop_started,
        dtc_count
    from {{ ref('int_telemetry_points_sessionised') }}
)

select
    trips.trip_id as trip_id,
    points.vehicle_id as vehicle_id,
    points.telemetry_id as telemetry_id,
    points.recorded_at as recorded_at,
    points.speed_kmh as speed_kmh,
    points.next_speed_kmh as next_speed_kmh,
    points.interval_s as interval_s,
    points.km_to_next as km_to_next,
    points.energy_level_percent as energy_level_percent,
    points.energy_drop_percent as energy_drop_percent,
    points.load_kg as load_kg,
    points.next_load_kg as next_load_kg,
    points.is_driving as is_driving,
    points.stop_started as stop_started,
    points.dtc_count as dtc_count
from points
asof inner join trips
    on points.vehicle_id = trips.vehicle_id and points.recorded_at >= trips.started_at
where points.recorded_at < trips.matched_until
