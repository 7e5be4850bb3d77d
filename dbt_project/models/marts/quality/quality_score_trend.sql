{#- The quality trend analysts and on-call read: per dataset and day, the latest measurement
    of every partition averaged, and how many partitions failed. A re-run's newer measurement
    replaces the older one, so a fixed partition stops counting as failed. -#}
with latest as (
    select
        dataset,
        partition_key,
        argMax(score, measured_at) as score,
        argMax(passed, measured_at) as passed,
        argMax(tuple(completeness, accuracy, consistency, timeliness, validity, uniqueness), measured_at) as dims,
        max(measured_at) as latest_measured_at
    from {{ ref('stg_ops__quality_scores') }}
    group by dataset, partition_key
)

select
    dataset,
    toDate(parseDateTimeBestEffort(substring(partition_key, 1, 10))) as partition_date,
    count() as partitions,
    countIf(not passed) as failed_partitions,
    avg(score) as avg_score,
    min(score) as min_score,
    avg(tupleElement(dims, 1)) as avg_completeness,
    avg(tupleElement(dims, 2)) as avg_accuracy,
    avg(tupleElement(dims, 3)) as avg_consistency,
    avg(tupleElement(dims, 4)) as avg_timeliness,
    avg(tupleElement(dims, 5)) as avg_validity,
    avg(tupleElement(dims, 6)) as avg_uniqueness,
    max(latest_measured_at) as last_measured_at
from latest
group by dataset, partition_date
