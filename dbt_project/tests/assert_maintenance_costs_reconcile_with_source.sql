-- Maintenance spend in the mart must equal the Fleet OS's own records, job for job: the fact
-- attaches every job to a vehicle, fleet and tenant with inner joins, and a job whose vehicle
-- or fleet went missing would otherwise vanish and understate the spend analysts report.
with source_totals as (
    select
        count() as jobs,
        round(sum(coalesce(cost, 0)), 2) as cost,
        round(sum(coalesce(downtime_hours, 0)), 3) as downtime
    from {{ ref('stg_fleet_core__maintenance_records') }}
),

mart_totals as (
    select
        count() as jobs,
        round(sum(coalesce(cost, 0)), 2) as cost,
        round(sum(coalesce(downtime_hours, 0)), 3) as downtime
    from {{ ref('fct_maintenance_records') }}
)

select
    source_totals.jobs as source_jobs,
    mart_totals.jobs as mart_jobs,
    source_totals.cost as source_cost,
    mart_totals.cost as mart_cost,
    source_totals.downtime as source_downtime,
    mart_totals.downtime as mart_downtime
from source_totals
cross join mart_totals
where source_totals.jobs != mart_totals.jobs
    or source_totals.cost != mart_totals.cost
    or source_totals.downtime != mart_totals.downtime
