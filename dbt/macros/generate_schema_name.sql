{#- Use the folder's schema name as is (staging, audience, ...) rather than dbt's default
    `<target>_<custom>`, so BI users find `audience.abandoned_cart_eligibility`.
    `nudge preview` and `nudge render` build into prefixed schemas (var schema_prefix, e.g.
    preview_audience) so looking ahead never touches the tables the live tick sends from. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ var('schema_prefix', '') }}{{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
