{#- The event-time filter of an incremental model, in whole UTC days.

    - Window vars set (Dagster passes its partition window): the days the window touches,
      [start of window_start's day, end of the day holding window_end), so an hourly window
      still rebuilds its whole day partition and insert_overwrite never swaps in half a day.
    - Incremental run without vars: every day from the newest day already built (late rows
      re-open it), read from `existing_column` of the built table (defaults to `column`).
    - Full refresh or first build without vars: no filter.

    `lookback` / `lookahead` widen the read by a ClickHouse interval ('2 hour'): models whose
    features need neighbouring rows read that much context around the days they write, and
    then keep only the days themselves with a second call without margins. -#}
{% macro incremental_window(column, lookback=none, lookahead=none, existing_column=none) -%}
    {%- set start = timestamp_var('window_start') -%}
    {%- set end = timestamp_var('window_end') -%}
    {%- set before = ' - interval ' ~ lookback if lookback else '' -%}
    {%- set after = ' + interval ' ~ lookahead if lookahead else '' -%}
    {%- if start and end -%}
        {{ column }} >= {{ window_first_day(start) }}{{ before }}
        and {{ column }} < {{ window_end_day(end) }}{{ after }}
    {%- elif is_incremental() -%}
        {{ column }} >= (
            select toDateTime64(toStartOfDay(max({{ existing_column or column }})), 3, 'UTC')
            from {{ this }}
        ){{ before }}
    {%- else -%}
        1 = 1
    {%- endif -%}
{%- endmacro %}

{#- Midnight UTC opening the day of the window's start. -#}
{% macro window_first_day(start) -%}
    toDateTime64(toStartOfDay(parseDateTime64BestEffort('{{ start }}', 3, 'UTC')), 3, 'UTC')
{%- endmacro %}

{#- Midnight UTC closing the day that holds the window's last instant (its end is exclusive). -#}
{% macro window_end_day(end) -%}
    toDateTime64(
        toStartOfDay(parseDateTime64BestEffort('{{ end }}', 3, 'UTC') - interval 1 millisecond)
        + interval 1 day,
        3,
        'UTC'
    )
{%- endmacro %}
