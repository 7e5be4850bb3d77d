{#- The event-time filter of an incremental model: the window Dagster passes as vars, else
    everything from the start of the newest day already built (late rows re-open it). On a
    full refresh or first build, no filter. -#}
{% macro incremental_window(column, existing_column=none) -%}
    {%- set start = var('window_start', '') -%}
    {%- set end = var('window_end', '') -%}
    {%- if start and end -%}
        {{ column }} >= parseDateTime64BestEffort('{{ start }}', 3, 'UTC')
        and {{ column }} < parseDateTime64BestEffort('{{ end }}', 3, 'UTC')
    {%- elif is_incremental() -%}
        {{ column }} >= (select toStartOfDay(max({{ existing_column or column }})) from {{ this }})
    {%- else -%}
        1 = 1
    {%- endif -%}
{%- endmacro %}
