{#- One row per policy decision (ALLOW or DENY) with its tenant, policy, sector and context. -#}
with decisions as (
    select * from {{ ref('stg_fleet_core__policy_decisions') }}
),

policies as (
    select policy_id, name, version, sector from {{ ref('stg_fleet_core__policies') }}
),

vehicles as (
    select vehicle_id, organization_id, fleet_id from {{ ref('int_vehicles_enriched') }}
)

select
    decisions.decision_id as decision_id,
    vehicles.organization_id as organization_id,
    vehicles.fleet_id as fleet_id,
    decisions.vehicle_id as vehicle_id,
    decisions.trip_id as trip_id,
    decisions.policy_id as policy_id,
    policies.name as policy_name,
    policies.version as policy_version,
    -- The sector the Fleet OS decided in; the policy's own when the context lacks it.
    coalesce(nullIf(JSONExtractString(decisions.context, 'sector'), ''), policies.sector)
        as sector,
    decisions.action as action,
    decisions.decision as decision,
    toBool(decisions.decision = 'ALLOW') as is_allowed,
    decisions.reason as reason,
    JSONExtract(decisions.context, 'energy_percent', 'Nullable(Float64)') as energy_percent,
    nullIf(JSONExtractString(decisions.context, 'operational_status'), '')
        as operational_status,
    JSONExtract(decisions.context, 'local_hour', 'Nullable(Float64)') as local_hour,
    toDate(decisions.decided_at) as decision_date,
    decisions.decided_at as decided_at
from decisions
inner join policies on decisions.policy_id = policies.policy_id
inner join vehicles on decisions.vehicle_id = vehicles.vehicle_id
