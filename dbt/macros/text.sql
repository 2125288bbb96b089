{#- Hold a personalization field to the length limit in var `var_name` (characters, as DuckDB's
    length() and Python's len() count them), so hostile source data cannot bloat an email.

    overflow='ellipsis' (names): a longer text is cut and ends in "…", at most the limit in all.
    overflow='null' (URLs): a longer text becomes null, since a cut URL would point nowhere.
    Null stays null; a text within the limit is returned unchanged. -#}
{% macro nudge_truncate(expression, var_name, overflow='ellipsis') -%}
    {%- set limit = var(var_name) | int -%}
    {%- if limit < 1 -%}
        {{ exceptions.raise_compiler_error("var " ~ var_name ~ " must be a positive number of characters") }}
    {%- endif -%}
    {%- if overflow == 'ellipsis' -%}
        case
            when length({{ expression }}) > {{ limit }}
                then rtrim(left({{ expression }}, {{ limit - 1 }})) || '…'
            else {{ expression }}
        end
    {%- elif overflow == 'null' -%}
        case when length({{ expression }}) <= {{ limit }} then {{ expression }} end
    {%- else -%}
        {{ exceptions.raise_compiler_error("nudge_truncate: overflow must be 'ellipsis' or 'null', got " ~ overflow) }}
    {%- endif -%}
{%- endmacro %}
