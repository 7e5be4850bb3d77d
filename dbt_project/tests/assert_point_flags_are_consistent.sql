-- Stops, rests and driving partition a vehicle's time: a rest is a long stop, a stop is not
-- driving, and a stop or rest starts inside one. Breaking this double-counts hours in the
-- vehicle-day split and makes "driving without rest" wrong. Only the days of the run's
-- window are checked (all of them without window vars): a daily run reads one day.
select vehicle_id, recorded_at, is_driving, in_stop, stop_started, in_rest, rest_started
from {{ ref('int_telemetry_points_sessionised') }}
where {{ incremental_window('recorded_at') }}
    and (
        (in_rest = 1 and in_stop = 0)
        or (is_driving = 1 and in_stop = 1)
        or (stop_started = 1 and in_stop = 0)
        or (rest_started = 1 and (in_rest = 0 or stop_started = 0))
        or (is_moving = 1 and is_driving = 0)
        or interval_s < 0
        or interval_s > 600
    )
