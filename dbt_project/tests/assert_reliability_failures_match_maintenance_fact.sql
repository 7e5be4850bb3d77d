-- MTBF divides driving time by failures; the failures per tenant and model must be exactly
-- the unscheduled jobs of the maintenance fact up to as_of. A join fan-out or a vehicle lost
-- between the two would skew the breakdown frequency analysts compare models by.
with from_fact as (
    select organization_id, manufacturer, model, count() as failures
    from {{ ref('fct_maintenance_records') }}
    where is_unscheduled and scheduled_date <= {{ as_of() }}
    group by organization_id, manufacturer, model
)

select
    reliability.organization_id,
    reliability.manufacturer,
    reliability.model,
    reliability.failures as mart_failures,
    from_fact.failures as fact_failures
from {{ ref('maintenance_reliability_by_model') }} as reliability
left join from_fact
    on reliability.organization_id = from_fact.organization_id
    and reliability.manufacturer = from_fact.manufacturer
    and reliability.model = from_fact.model
-- A group the fact has no failures for must count none (NULL or 0, whatever join_use_nulls).
where reliability.failures != coalesce(from_fact.failures, 0)
