-- Every command issued by as_of has exactly one outcome (completed, failed, expired or
-- pending), and every one is counted: otherwise the success rate has the wrong denominator.
with expected as (
    select organization_id, command_type, count() as commands
    from {{ ref('fct_vehicle_commands') }}
    where issued_at <= {{ as_of() }}
    group by organization_id, command_type
)

select
    performance.organization_id,
    performance.command_type,
    performance.commands,
    expected.commands as expected_commands
from {{ ref('command_performance') }} as performance
left join expected
    on performance.organization_id = expected.organization_id
    and performance.command_type = expected.command_type
where performance.commands != coalesce(expected.commands, 0)
    or performance.completed_commands + performance.failed_commands
        + performance.expired_commands + performance.pending_commands != performance.commands
