{#- One row per Fleet OS alert with its tenant and how long acknowledgement and resolution took. -#}
with alerts as (
    select * from {{ ref('stg_fleet_core__alerts') }}
),

vehicles as (
    select vehicle_id, organization_id, fleet_id from {{ ref('int_vehicles_enriched') }}
)

select
    alerts.alert_id as alert_id,
    vehicles.organization_id as organization_id,
    vehicles.fleet_id as fleet_id,
    alerts.vehicle_id as vehicle_id,
    alerts.trip_id as trip_id,
    alerts.alert_type as alert_type,
    alerts.severity as severity,
    alerts.status as status,
    alerts.message as message,
    nullIf(JSONExtractString(alerts.context_data, 'component'), '') as component,
    nullIf(JSONExtractString(alerts.context_data, 'dtc'), '') as dtc,
    toDate(alerts.triggered_at) as alert_date,
    alerts.triggered_at as triggered_at,
    alerts.acknowledged_at as acknowledged_at,
    alerts.resolved_at as resolved_at,
    alerts.acknowledged_by as acknowledged_by,
    alerts.resolved_by as resolved_by,
    dateDiff('millisecond', alerts.triggered_at, alerts.acknowledged_at) / 60000.0
        as minutes_to_acknowledge,
    dateDiff('millisecond', alerts.triggered_at, alerts.resolved_at) / 60000.0
        as minutes_to_resolve
from alerts
inner join vehicles on alerts.vehicle_id = vehicles.vehicle_id
