{#- The models that summarise the event history (carts, orders, customer activity) are dbt
    incremental models keyed by what they summarise: each tick recomputes only the keys whose
    events changed, from all of those keys' events, so a row is always what a full rebuild
    would make of it. README "Incremental models".

    Each row carries computed_as_of, the tick instant it was computed at. A key changed when
    base_raw__events (re)loaded one of its events' copies at or after the model's last instant
    (new and late events, and both sides of a copy that now wins over another), or holds one
    dated after that instant and at or before this tick's, which this tick now sees for the
    first time (events arrive before their time when clocks are skewed). One dated after this
    tick is as invisible to it (stg_raw__events) as it was to the last: counting it too made a
    customer with one event days ahead be recomputed from their whole history every hour until
    then, a fifth of all customers per tick on the generated shop. -#}
{% macro nudge_changed_keys(key) -%}
    select distinct events.{{ key }}
    from {{ ref('base_raw__events') }} as events
    cross join (select max(computed_as_of) as computed_as_of from {{ this }}) as last_build
    where
        events.{{ key }} is not null
        and (
            last_build.computed_as_of is null
            or events.loaded_as_of >= last_build.computed_as_of
            or (
                events.occurred_at > last_build.computed_as_of
                and events.occurred_at <= {{ as_of() }}
            )
        )
{%- endmacro %}

{#- The keys this run recomputes: a temporary table the pre-hook fills and the model reads. -#}
{% macro nudge_changed_relation() -%}
    {{ this.identifier }}__changed
{%- endmacro %}

{#- Pre-hook of those models, inside the model's transaction.
    1. A tick earlier than the model's last one (a replay, or an hourly tick that started after
       a later transactional one) would have to forget events it may not see yet: the table is
       emptied instead, and every key is recomputed (a full rebuild, once).
    2. The changed keys are set aside, and their rows deleted first: a key that no longer has a
       row (its only event now counts under another customer, or another event name) must not
       keep its old one.
    owned_by: a relation of the keys with their customer_id (the carts and their owners). Its
    keys whose customer's events changed change too: a cart's episodes end with any order of
    its owner's, whatever cart that order names.
    also: a query of more keys that changed (nudge_customers_of_changed_orders). -#}
{% macro nudge_recompute_changed(key, owned_by=none, also=none) -%}
    {%- if is_incremental() -%}
        delete from {{ this }}
        where (select max(computed_as_of) from {{ this }}) > {{ as_of() }};

        drop table if exists {{ nudge_changed_relation() }};

        create temporary table {{ nudge_changed_relation() }} as
        {{ nudge_changed_keys(key) }}
        {%- if owned_by is not none %}
            union
            select owned.{{ key }}
            from {{ owned_by }} as owned
            where owned.customer_id in ({{ nudge_changed_keys('customer_id') }})
        {%- endif %}
        {%- if also is not none %}
            union
            {{ also }}
        {%- endif %};

        delete from {{ this }}
        where {{ key }} in (select {{ key }} from {{ nudge_changed_relation() }})
    {%- endif -%}
{%- endmacro %}

{#- The customers with an event naming an order whose events changed. An order belongs to the
    customer of its first order_completed (int_orders__itemized), so an earlier one under
    another customer, with an event id of its own, moves the order: its previous owner's
    purchases change although none of their events did. -#}
{% macro nudge_customers_of_changed_orders() -%}
    select events.customer_id
    from {{ ref('base_raw__events') }} as events
    where events.order_id in ({{ nudge_changed_keys('order_id') }})
{%- endmacro %}
