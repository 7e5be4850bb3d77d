-- A tenant's policy may only decide about that tenant's vehicles. A decision whose policy
-- belongs to another organization is a tenancy leak in the Fleet OS (or a wrong join here),
-- and would put one tenant's decisions into another's allow/deny rates.
select
    decisions.decision_id,
    decisions.organization_id as vehicle_organization_id,
    policies.organization_id as policy_organization_id
from {{ ref('fct_policy_decisions') }} as decisions
inner join {{ ref('stg_fleet_core__policies') }} as policies
    on decisions.policy_id = policies.policy_id
where decisions.organization_id != policies.organization_id
