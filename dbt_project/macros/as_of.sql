{#- The moment time-relative models answer for: var('as_of') (any ISO timestamp), else now. -#}
{% macro as_of() -%}
    {%- set value = var('as_of', '') -%}
    {%- if value -%}
        parseDateTime64BestEffort('{{ value }}', 3, 'UTC')
    {%- else -%}
        now64(3, 'UTC')
    {%- endif -%}
{%- endmacro %}
