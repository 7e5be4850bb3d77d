{#- Mean time to acknowledge and to resolve alerts per tenant, type and severity by as_of. -#}
select
    organization_id,
    alert_type,
    severity,
    count() as alerts,
    countIf(acknowledged_at <= {{ as_of() }}) as acknowledged_alerts,
    countIf(resolved_at <= {{ as_of() }}) as resolved_alerts,
    count() - countIf(resolved_at <= {{ as_of() }}) as open_alerts,
    avgOrNullIf(minutes_to_acknowledge, acknowledged_at <= {{ as_of() }})
        as mean_minutes_to_acknowledge,
    avgOrNullIf(minutes_to_resolve, resolved_at <= {{ as_of() }}) as mean_minutes_to_resolve,
    min(triggered_at) as first_triggered_at,
    max(triggered_at) as last_triggered_at
from {{ ref('fct_alerts') }}
where triggered_at <= {{ as_of() }}
group by organization_id, alert_type, severity
