{#- Every telemetry point with its neighbours, the interval to the next point, and whether the
    vehicle was driving, in a stop or resting (docs: _telemetry__models.yml).

    Thresholds (one place; the yml explains each):
    - moving: speed >= 3 km/h. Below is walking pace; a parked unit's GNSS reports 0-1 km/h.
    - session gap: no point for more than 10 minutes ends a session: the interval is unknown
      time, counted as neither driving nor distance (20 samples at the 30 s default rate).
    - stop: stationary for at least 3 minutes; a shorter halt between two moving points
      (traffic light, junction) belongs to the drive.
    - rest: stationary for at least 20 minutes. int_vehicle_states_summarised also counts a
      gap of 20 minutes or more as rest (the unit was off or out of coverage: that time
      cannot be claimed as driving).

    Every flag is decided from at most 30 minutes either side of the point (a 20-minute rest
    plus the 10-minute gap), so the model is incremental by day with a bounded read: a
    rebuilt day reads an hour before and after it and gives the rows of a full refresh, in
    any order of days.

    Memory: the three windows each sort the whole input (the hot path is partitioned by
    hour, so nothing arrives in vehicle order), and the insert gathers 256 MB blocks per
    day partition. A full refresh of 17 M points took 8.5 GB of the warehouse this way,
    growing with history. The query settings spill each sort to disk past 200 MB (the ratio
    setting is zeroed because, when set, it overrides the byte limit), merge the spilled
    runs in small blocks (the merge holds one read buffer per run) and insert 32 MB blocks
    (bench/probe_full_refresh.py; docs/analytics.md, "Memory").
    -#}
{{
    config(
        materialized='incremental',
        incremental_strategy='insert_overwrite',
        on_schema_change='fail',
        engine='MergeTree()',
        partition_by='toDate(recorded_at)',
        order_by='(vehicle_id, recorded_at, telemetry_id)',
        query_settings={
            'max_bytes_before_external_sort': 200000000,
            'max_bytes_ratio_before_external_sort': 0,
            'max_block_size': 8192,
            'min_insert_block_size_bytes': 32000000,
        },
    )
}}
{%- set moving_kmh = 3.0 -%}
{%- set gap_ms = 600000 -%}
{%- set stop_ms = 180000 -%}
{%- set rest_ms = 1200000 -%}
{%- set context = '1 hour' -%}

with points as (
    select
        telemetry_id,
        vehicle_id,
        recorded_at,
        toUnixTimestamp64Milli(recorded_at) as t_ms,
        latitude,
        longitude,
        speed_kmh,
        battery_level_percent,
        fuel_level_percent,
        -- A vehicle reports one of the two (battery for EVs, fuel for ICE).
        coalesce(battery_level_percent, fuel_level_percent) as energy_level_percent,
        load_kg,
        energy_rate,
        operational_status,
        diagnostic_codes
    from {{ ref('stg_telemetry__vehicle_telemetry') }}
    where {{ incremental_window('recorded_at', lookback=context, lookahead=context) }}
),

neighbours as (
    select
        *,
        lagInFrame(toNullable(t_ms)) over vehicle_time as lag_t_ms,
        lagInFrame(toNullable(speed_kmh)) over vehicle_time as lag_speed_kmh,
        leadInFrame(toNullable(t_ms)) over vehicle_time as lead_t_ms,
        leadInFrame(toNullable(speed_kmh)) over vehicle_time as lead_speed_kmh,
        leadInFrame(toNullable(latitude)) over vehicle_time as lead_latitude,
        leadInFrame(toNullable(longitude)) over vehicle_time as lead_longitude,
        leadInFrame(energy_level_percent) over vehicle_time as lead_energy_level_percent,
        leadInFrame(load_kg) over vehicle_time as lead_load_kg
    from points
    window vehicle_time as (
        partition by vehicle_id
        order by recorded_at, telemetry_id
        rows between unbounded preceding and unbounded following
    )
),

flagged as (
    select
        *,
        speed_kmh >= {{ moving_kmh }} as moving,
        -- assumeNotNull after the NULL check keeps the flags non-Nullable UInt8.
        lag_t_ms is null or assumeNotNull(t_ms - lag_t_ms) > {{ gap_ms }} as opens_session,
        lead_t_ms is null or assumeNotNull(lead_t_ms - t_ms) > {{ gap_ms }} as closes_session,
        -- A run is a stretch of points all moving or all stationary, without a gap.
        lag_t_ms is null
            or assumeNotNull(t_ms - lag_t_ms) > {{ gap_ms }}
            or (speed_kmh >= {{ moving_kmh }})
                != (assumeNotNull(lag_speed_kmh) >= {{ moving_kmh }})
            as opens_run
    from neighbours
),

runs as (
    select
        *,
        sum(toUInt64(opens_run)) over (
            partition by vehicle_id
            order by recorded_at, telemetry_id
            rows between unbounded preceding and current row
        ) as run_number
    from flagged
),

run_bounds as (
    select
        *,
        min(t_ms) over vehicle_run as run_first_t_ms,
        max(t_ms) over vehicle_run as run_last_t_ms,
        -- Whether a moving point adjoins the run on each side (a run only ends at a state
        -- change or a gap, so "no gap" there means the neighbour moves).
        not argMin(opens_session, (t_ms, telemetry_id)) over vehicle_run as after_motion,
        not argMax(closes_session, (t_ms, telemetry_id)) over vehicle_run as before_motion
    from runs
    window vehicle_run as (
        partition by vehicle_id, run_number
        rows between unbounded preceding and unbounded following
    )
),

classified as (
    select
        *,
        not moving and run_last_t_ms - run_first_t_ms >= {{ stop_ms }} as stopped,
        not moving and run_last_t_ms - run_first_t_ms >= {{ rest_ms }} as resting,
        moving
            or (run_last_t_ms - run_first_t_ms < {{ stop_ms }} and after_motion and before_motion)
            as driving,
        -- Clipped at the point's UTC midnight: a day never holds more than 24 h, whatever
        -- sample is missing around it (the seconds past midnight are left out, not moved).
        if(
            closes_session,
            0.0,
            (least(assumeNotNull(lead_t_ms), toInt64(toUnixTimestamp(toStartOfDay(recorded_at))) * 1000 + 86400000) - t_ms) / 1000.0
        ) as interval_s
    from run_bounds
)

select
    vehicle_id,
    telemetry_id,
    recorded_at,
    toDate(recorded_at) as recorded_date,
    latitude,
    longitude,
    speed_kmh,
    battery_level_percent,
    fuel_level_percent,
    energy_level_percent,
    load_kg,
    energy_rate,
    operational_status,
    diagnostic_codes,
    toUInt32(length(diagnostic_codes)) as dtc_count,
    if(lag_t_ms is null, null, (t_ms - lag_t_ms) / 1000.0) as seconds_since_previous,
    if(lead_t_ms is null, null, (lead_t_ms - t_ms) / 1000.0) as seconds_to_next,
    interval_s,
    -- Distance only over intervals with motion at either end: a parked unit's GNSS jitter of
    -- a few metres per sample would otherwise add kilometres a day.
    if(
        interval_s > 0 and (moving or assumeNotNull(lead_speed_kmh) >= {{ moving_kmh }}),
        2 * 6371.0088 * asin(sqrt(
            pow(sin(radians(assumeNotNull(lead_latitude) - latitude) / 2), 2)
            + cos(radians(latitude)) * cos(radians(assumeNotNull(lead_latitude)))
            * pow(sin(radians(assumeNotNull(lead_longitude) - longitude) / 2), 2)
        )),
        0.0
    ) as km_to_next,
    if(interval_s > 0, lead_speed_kmh, null) as next_speed_kmh,
    if(interval_s > 0, lead_energy_level_percent, null) as next_energy_level_percent,
    if(interval_s > 0, lead_load_kg, null) as next_load_kg,
    -- Consumption counts falls only: charging or refuelling must not cancel what was used.
    if(
        interval_s > 0,
        greatest(energy_level_percent - lead_energy_level_percent, 0),
        null
    ) as energy_drop_percent,
    toUInt8(moving) as is_moving,
    toUInt8(driving) as is_driving,
    toUInt8(stopped) as in_stop,
    toUInt8(stopped and opens_run) as stop_started,
    toUInt8(resting) as in_rest,
    toUInt8(resting and opens_run) as rest_started,
    toUInt8(opens_session) as gap_before
from classified
where {{ incremental_window('recorded_at') }}
