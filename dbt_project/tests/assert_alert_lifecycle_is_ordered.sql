-- An alert is acknowledged and resolved after it is triggered; a negative time would pull
-- MTTA and MTTR down and make on-call look faster than it is. Rows returned here point at
-- clock skew in the Fleet OS or timestamps mixed up in extraction.
select alert_id, triggered_at, acknowledged_at, resolved_at
from {{ ref('fct_alerts') }}
where minutes_to_acknowledge < 0
    or minutes_to_resolve < 0
