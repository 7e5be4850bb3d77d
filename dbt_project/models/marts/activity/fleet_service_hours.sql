{#- Daily active against out-of-service vehicle hours per fleet, up to as_of's day. Active is
    driving or idling with the powertrain on; out of service is in maintenance or broken down,
    from telemetry, beside the downtime the maintenance records book. -#}
select
    organization_id,
    fleet_id,
    activity_date,
    vehicles_in_fleet,
    vehicles_reporting,
    observed_hours,
    active_hours,
    driving_hours,
    idle_hours,
    out_of_service_hours,
    maintenance_downtime_hours,
    availability_rate,
    utilisation_rate
from {{ ref('fct_fleet_days') }}
where activity_date <= toDate({{ as_of() }})
