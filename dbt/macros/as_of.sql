{#- The tick's instant as a timestamptz. Every model reads time through this macro, never
    through now(), so ticks can be replayed, tested and backfilled. -#}
{% macro as_of() -%}
    cast('{{ var("as_of") }}' as timestamptz)
{%- endmacro %}
