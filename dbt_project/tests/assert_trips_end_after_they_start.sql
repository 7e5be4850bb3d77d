-- A trip ends after it starts; an end before the start is a Fleet OS clock or data error.
-- fct_trips leaves such a trip's duration NULL instead of averaging a negative one, and this
-- warning names the trips so the source can be fixed.
{{ config(severity='warn') }}
select trip_id, vehicle_id, actual_start, actual_end
from {{ ref('fct_trips') }}
where actual_end < actual_start
