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

{% macro postgres__nudge_latest(value, at, tiebreak, where) -%}
    (array_agg({{ value }} order by {{ at }} desc nulls last, {{ tiebreak }} desc nulls last)
        filter (where {{ value }} is not null{% if where %} and ({{ where }}){% endif %}))[1]
{%- endmacro %}

{#- The value from the earliest row, by `at` and then `tiebreak` (see nudge_latest). -#}
{% macro nudge_earliest(value, at, tiebreak) -%}
    {{ return(adapter.dispatch('nudge_earliest', 'nudge')(value, at, tiebreak)) }}
{%- endmacro %}

{% macro default__nudge_earliest(value, at, tiebreak) -%}
    arg_min({{ value }}, ({{ at }}, {{ tiebreak }}))
{%- endmacro %}

{% macro postgres__nudge_earliest(value, at, tiebreak) -%}
    (array_agg({{ value }} order by {{ at }} nulls last, {{ tiebreak }} nulls last)
        filter (where {{ value }} is not null))[1]
{%- endmacro %}
