{#- The tick's instant as a timestamptz. Every model reads time through this macro, never
    through now(), so ticks can be replayed, tested and backfilled.

    Where the instant comes from, first found wins:
    1. var as_of (`dbt build --vars '{as_of: ...}'`, a unit test's overrides);
    2. the environment variable NUDGE_AS_OF, which nudge's ticks and replays set. Not a var on
       purpose: dbt re-parses the whole project whenever --vars change (about 4 s here, every
       tick), while an environment variable read only when executing leaves the saved
       partial parse valid from one tick to the next;
    3. 2026-01-01T00:00:00+00:00, so a plain `dbt build` never reads the wall clock. -#}
{% macro as_of() -%}
    cast('{{ nudge_as_of_text() }}' as timestamptz)
{%- endmacro %}

{% macro nudge_as_of_text() -%}
    {%- set fallback = '2026-01-01T00:00:00+00:00' -%}
    {%- if var('as_of', '') -%}
        {{- var('as_of') -}}
    {%- elif execute -%}
        {#- Read only when executing: an env_var() call while parsing would tie every model to
            the variable's value, and a new value would re-parse them all. -#}
        {{- env_var('NUDGE_AS_OF', fallback) -}}
    {%- else -%}
        {{- fallback -}}
    {%- endif -%}
{%- endmacro %}
