-- The point model is rebuilt day by day with an hour of context either side; a wrong window
-- would drop the points near midnight or keep the context rows twice. Every telemetry event
-- of a built day must be there exactly once (the newest day is left out: it may be loading).
-- Only the days of the run's window are counted (all days without window vars). Copies are
-- counted per (day, event) first: a GROUP BY over many keys can spill to disk, where
-- uniqExact per day held every id of the history at once (3.4 GB for 52 M points).
with copies as (
    select recorded_date, telemetry_id, count() as copies
    from {{ ref('int_telemetry_points_sessionised') }}
    where {{ incremental_window('recorded_at') }}
    group by recorded_date, telemetry_id
),

points as (
    select recorded_date, sum(copies) as points, count() as events
    from copies
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
