{#- The given day of a month as a date, capped at the month's last day: a birthday on 29 February
    is celebrated on 28 February in other years, a 31st on a 30-day month's 30th. Portable SQL
    (make_date and interval arithmetic mean the same on DuckDB and PostgreSQL). -#}
{% macro nudge_day_of_month(year, month, day) -%}
    cast(
        least(
            make_date(cast({{ year }} as integer), cast({{ month }} as integer), 1)
            + interval '1 day' * (cast({{ day }} as integer) - 1),
            make_date(cast({{ year }} as integer), cast({{ month }} as integer), 1)
            + interval '1 month' - interval '1 day'
        ) as date
    )
{%- endmacro %}

{#- An instant as a compact UTC stamp, 20261102T143000: part of trigger keys, so it must print
    the same on every engine. -#}
{% macro nudge_utc_stamp(instant) -%}
    {{ return(adapter.dispatch('nudge_utc_stamp', 'nudge')(instant)) }}
{%- endmacro %}

{% macro default__nudge_utc_stamp(instant) -%}
    strftime({{ instant }} at time zone 'UTC', '%Y%m%dT%H%M%S')
{%- endmacro %}

{% macro postgres__nudge_utc_stamp(instant) -%}
    to_char({{ instant }} at time zone 'UTC', 'YYYYMMDD"T"HH24MISS')
{%- endmacro %}
