{#- dbt's filter of a data test's input (the `where` config), rendered when the test runs.

    A test `where` may call a macro such as incremental_window(); dbt renders test configs
    when it parses, without macros, so the call is written inside {% raw %}...{% endraw %}
    and rendered here. A partitioned run (window vars set) then tests the days it rebuilt,
    not the whole history; a full refresh or a plain `dbt test` still tests every row. -#}
{% macro default__get_where_subquery(relation) -%}
    {%- set where = config.get('where', '') -%}
    {%- if where -%}
        {%- set filtered -%}
            (select * from {{ relation }} where {{ render(where) }}) dbt_subquery
        {%- endset -%}
        {%- do return(filtered) -%}
    {%- else -%}
        {%- do return(relation) -%}
    {%- endif -%}
{%- endmacro %}
