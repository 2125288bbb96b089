{#- Email normalization and a pragmatic syntax check: one @, a non-empty local part, a dotted
    domain, no spaces. Deliverability is the ESP's job; this only keeps garbage out. -#}
{% macro normalize_email(column) -%}
    nullif(lower(trim({{ column }})), '')
{%- endmacro %}

{% macro is_valid_email(column) -%}
    coalesce(regexp_full_match({{ column }}, '[a-z0-9._%+''-]+@[a-z0-9-]+(\.[a-z0-9-]+)*\.[a-z]{2,}'), false)
{%- endmacro %}
