{#- The models that summarise the event history (carts, orders, customer activity) are dbt
    incremental models keyed by what they summarise: each tick recomputes only the keys whose
    events changed, from all of those keys' events, so a row is always what a full rebuild
    would make of it. README "Incremental models".

    Each row carries computed_as_of, the tick instant it was computed at. A key changed when
    base_raw__events loaded one of its events at or after the model's last instant (new and late
    events, replacing copies), or holds one dated after that instant, which this tick may now
    see (events arrive before their time when clocks are skewed). -#}
{% macro nudge_changed_keys(key) -%}
    select distinct events.{{ key }}
    from {{ ref('base_raw__events') }} as events
    cross join (select max(computed_as_of) as computed_as_of from {{ this }}) as last_build
    where
        events.{{ key }} is not null
        and (
            last_build.computed_as_of is null
            or events.loaded_as_of >= last_build.computed_as_of
            or events.occurred_at > last_build.computed_as_of
        )
{%- endmacro %}

{#- Pre-hook of those models: a tick earlier than the model's last one (a replay, or an hourly tick
    that started after a later transactional one) would have to forget events it may not see
    yet. It empties the table instead, and nudge_changed_keys then recomputes every key: a full
    rebuild, once. -#}
{% macro nudge_forget_if_rewound() -%}
    {%- if is_incremental() -%}
        delete from {{ this }}
        where (select max(computed_as_of) from {{ this }}) > {{ as_of() }}
    {%- endif -%}
{%- endmacro %}
