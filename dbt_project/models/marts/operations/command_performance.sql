{#- Success rate and latency of vehicle commands, per tenant and command type, up to as_of. -#}
with commands as (
    select
        *,
        -- The outcome known at as_of: an answer counts once it arrived, an expiry once the
        -- deadline passed; anything else was still waiting.
        multiIf(
            executed_at <= {{ as_of() }}, status,
            status = 'expired' and expires_at <= {{ as_of() }}, 'expired',
            'pending'
        ) as outcome
    from {{ ref('fct_vehicle_commands') }}
    where issued_at <= {{ as_of() }}
)

select
    organization_id,
    command_type,
    count() as commands,
    countIf(outcome = 'completed') as completed_commands,
    countIf(outcome = 'failed') as failed_commands,
    countIf(outcome = 'expired') as expired_commands,
    countIf(outcome = 'pending') as pending_commands,
    if(
        countIf(outcome != 'pending') = 0,
        null,
        countIf(outcome = 'completed') / countIf(outcome != 'pending')
    ) as success_rate,
    countIf(outcome in ('completed', 'failed')) as answered_commands,
    avgOrNullIf(latency_s, outcome in ('completed', 'failed')) as mean_latency_s,
    if(
        countIf(outcome in ('completed', 'failed')) = 0,
        null,
        quantileExactInclusiveIf(0.5)(latency_s, outcome in ('completed', 'failed'))
    ) as median_latency_s,
    if(
        countIf(outcome in ('completed', 'failed')) = 0,
        null,
        quantileExactInclusiveIf(0.95)(latency_s, outcome in ('completed', 'failed'))
    ) as p95_latency_s,
    maxOrNullIf(latency_s, outcome in ('completed', 'failed')) as max_latency_s
from commands
group by organization_id, command_type
