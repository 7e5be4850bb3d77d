{#- Quality measurements as written by the gates, one row per measurement. -#}
with source as (
    select * from {{ source('ops', 'quality_scores') }}
)

select
    dataset,
    `partition` as partition_key,
    run_id,
    measured_at,
    score,
    passed,
    completeness,
    accuracy,
    consistency,
    timeliness,
    validity,
    uniqueness,
    failed_dimensions
from source
