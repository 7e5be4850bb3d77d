-- The telemetry distance of a finished trip should match what the Fleet OS reported for it
-- (its own odometer reckoning) within 15 % or half a kilometre. A larger gap means the trip
-- was matched to the wrong points (clock skew between systems, overlapping trips) or its
-- telemetry has holes; a warning, since a real coverage outage can cause it too.
{{ config(severity='warn') }}

select
    trip_id,
    status,
    distance_km,
    reported_distance_km
from {{ ref('fct_trips') }}
where status in ('completed', 'aborted')
    and reported_distance_km is not null
    and abs(distance_km - reported_distance_km) > greatest(0.5, 0.15 * reported_distance_km)
