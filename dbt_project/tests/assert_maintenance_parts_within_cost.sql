-- A completed job's parts cannot cost more than the whole job: labour is never negative. A
-- violation means parts_used was parsed wrongly (quantity or unit_cost read from the wrong
-- key) or the Fleet OS recorded an inconsistent invoice; either way the cost split is wrong.
select maintenance_id, cost, parts_cost
from {{ ref('fct_maintenance_records') }}
where is_completed
    -- Costs are rounded to cents at the source.
    and parts_cost > cost + 0.005
