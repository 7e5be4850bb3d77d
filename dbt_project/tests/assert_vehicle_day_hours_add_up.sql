-- A vehicle-day's time splits into driving, idle, charging, parked and out of service with
-- nothing left over and nothing counted twice, and never exceeds the day. A remainder means a
-- status the split does not know (the Fleet OS added one) or an interval counted in two
-- buckets; more than 24 hours means intervals leaking across day boundaries.
select
    vehicle_id,
    activity_date,
    observed_hours,
    driving_hours + idle_hours + charging_hours + parked_hours + out_of_service_hours
        as split_hours
from {{ ref('fct_vehicle_days') }}
where abs(split_hours - observed_hours) > 1e-6
    or observed_hours > 24 + 1e-6
    or driving_hours < 0
