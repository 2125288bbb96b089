{#- Email normalization and a pragmatic syntax check: one @, a non-empty local part, a dotted
    domain, no spaces. Deliverability is the ESP's job; this only keeps garbage out. -#}
{% macro normalize_email(column) -%}
    nullif(lower(trim({{ column }})), '')
{%- endmacro %}

{% macro is_valid_email(column) -%}
    coalesce({{ nudge_matches(column, "[a-z0-9._%+''-]+@[a-z0-9-]+(\.[a-z0-9-]+)*\.[a-z]{2,}") }}, false)
{%- endmacro %}

{#- The salted hash nudge keeps of an erased address (nudge.erasures): lowercase hex SHA-256 of
    salt || address, the same as dagster_project/privacy.py computes (erasure_hash). -#}
{% macro erasure_hash(salt, email) -%}
    {{ return(adapter.dispatch('erasure_hash', 'nudge')(salt, email)) }}
{%- endmacro %}

{% macro default__erasure_hash(salt, email) -%}
    sha256({{ salt }} || {{ email }})
{%- endmacro %}

{% macro postgres__erasure_hash(salt, email) -%}
    encode(sha256(convert_to({{ salt }} || {{ email }}, 'UTF8')), 'hex')
{%- endmacro %}
