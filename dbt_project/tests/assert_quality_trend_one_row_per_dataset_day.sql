-- The trend is read as one point per dataset and day: a second row would double a day's
-- partitions in any chart or sum built on it.
select dataset, partition_date, count() as rows
from {{ ref('quality_score_trend') }}
group by dataset, partition_date
having rows > 1
