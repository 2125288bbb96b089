{#- Use the folder's schema name as is (staging, audience, ...) rather than dbt's default
    `<target>_<custom>`, so BI users find `audience.abandoned_cart_eligibility`. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
