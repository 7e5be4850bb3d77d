{#- The quality trend analysts and on-call read: per dataset and day, the latest measurement
    of every partition averaged, and how many partitions failed. A re-run's newer measurement
    replaces the older one, so a fixed partition stops counting as failed. -#}
with measured as (
    select
        *,
        {#- An undated partition (a fleet-core snapshot is 'current') counts on the day it
            was measured, so each day keeps its own latest measurement of it. -#}
        coalesce(
            if(match(partition_key, '^[0-9]{4}-[0-9]{2}-[0-9]{2}'),
               toDateOrNull(substring(partition_key, 1, 10)), null),
            toDate(measured_at)
        ) as partition_date
    from {{ ref('stg_ops__quality_scores') }}
),

latest as (
    select
        dataset,
        partition_key,
        partition_date,
        argMax(score, measured_at) as score,
        argMax(passed, measured_at) as passed,
        argMax(tuple(completeness, accuracy, consistency, timeliness, validity, uniqueness), measured_at) as dims,
        max(measured_at) as latest_measured_at
    from measured
    group by dataset, partition_key, partition_date
)

select
    dataset,
    partition_date,
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
