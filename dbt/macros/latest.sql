{#- The value from the latest row, by `at` and then `tiebreak`, among the rows where `where`
    holds (null values are skipped): two rows at the same instant always resolve the same way,
    whatever order the warehouse reads them in, so an incremental build keeps what a full
    rebuild keeps and reruns agree. Ordering by `at` alone keeps whichever tied row was read
    first. -#}
{% macro nudge_latest(value, at, tiebreak, where=none) -%}
    {{ return(adapter.dispatch('nudge_latest', 'nudge')(value, at, tiebreak, where)) }}
{%- endmacro %}

{% macro default__nudge_latest(value, at, tiebreak, where) -%}
    arg_max({{ value }}, ({{ at }}, {{ tiebreak }}))
    {%- if where %} filter (where {{ where }}){% endif %}
{%- endmacro %}
