{#- The moment time-relative models answer for: var('as_of') (any ISO timestamp), else now. -#}
{% macro as_of() -%}
    {%- set value = timestamp_var('as_of') -%}
    {%- if value -%}
        parseDateTime64BestEffort('{{ value }}', 3, 'UTC')
    {%- else -%}
        now64(3, 'UTC')
    {%- endif -%}
{%- endmacro %}

{#- A timestamp var as ISO 8601 text ('' when unset), or a compilation error naming it.
    The text is pasted into SQL, so anything but a date, a time and an offset is refused
    before it reaches the warehouse. YAML may hand over a date or datetime: used as text. -#}
{% macro timestamp_var(name) -%}
    {%- set raw = var(name, '') -%}
    {%- set value = '' if raw is none else (raw | string) | trim -%}
    {%- set iso = '^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])'
        ~ '([T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,9})?)?'
        ~ ' ?(Z|UTC|[+-][0-9]{2}(:?[0-9]{2})?)?)?$' -%}
    {%- if value and not modules.re.match(iso, value) -%}
        {{ exceptions.raise_compiler_error(
            "var " ~ name ~ " must be an ISO 8601 timestamp such as 2026-11-21T00:00:00Z "
            ~ "or a date such as 2026-11-21, got \"" ~ value ~ "\""
        ) }}
    {%- endif -%}
    {{- return(value) -}}
{%- endmacro %}
