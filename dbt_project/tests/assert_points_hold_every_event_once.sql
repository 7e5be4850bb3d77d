-- The point model is rebuilt day by day with an hour of context either side; a wrong window
-- would drop the points near midnight or keep the context rows twice. Every telemetry event
-- of a built day must be there exactly once (the newest day is left out: it may be loading).
-- Only the days of the run's window are counted (all days without window vars).
with points as (
    select recorded_date, count() as points, uniqExact(telemetry_id) as events
    from {{ ref('int_telemetry_points_sessionised') }}
    where {{ incremental_window('recorded_at') }}
    group by recorded_date
),

events as (
    select toDate(recorded_at) as recorded_date, count() as events
    from {{ ref('stg_telemetry__vehicle_telemetry') }}
    where toDate(recorded_at) in (select recorded_date from points)
    group by recorded_date
)

select
    points.recorded_date as recorded_date,
    points.points as points,
    points.events as distinct_events,
    events.events as source_events
from points
inner join events on points.recorded_date = events.recorded_date
where points.recorded_date < (
        select max(recorded_date) from {{ ref('int_telemetry_points_sessionised') }}
    )
    and (points.points != events.events or points.events != events.events)
