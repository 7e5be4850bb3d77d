{#- Allow and deny rates per tenant, policy and sector, up to as_of. -#}
select
    organization_id,
    policy_id,
    sector,
    any(policy_name) as policy_name,
    any(policy_version) as policy_version,
    count() as decisions,
    countIf(is_allowed) as allowed_decisions,
    countIf(not is_allowed) as denied_decisions,
    countIf(is_allowed) / count() as allow_rate,
    countIf(not is_allowed) / count() as deny_rate,
    min(decided_at) as first_decided_at,
    max(decided_at) as last_decided_at
from {{ ref('fct_policy_decisions') }}
where decided_at <= {{ as_of() }}
group by organization_id, policy_id, sector
