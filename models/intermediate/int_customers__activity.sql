{{
    config(
        materialized='incremental',
        unique_key='customer_id',
        incremental_strategy='delete+insert',
        on_schema_change='fail',
        pre_hook="{{ nudge_recompute_changed('customer_id') }}",
    )
}}
-- depends_on: {{ ref('base_raw__events') }} (read by the pre-hook)
with

events as (

    select * from {{ ref('stg_raw__events') }}
    {% if is_incremental() -%}
        -- Incremental (macros/incremental.sql): only the customers whose events changed, with
        -- all their events.
        where customer_id in (select customer_id from {{ nudge_changed_relation() }})
    {%- endif %}

),

final as (

    select
        customer_id,
        -- Something the customer did: not the shop shipping or delivering their order, or a
        -- parcel would push back the lapse win_back counts from.
        max(occurred_at) filter (
            where event_name not in ('order_shipped', 'order_delivered')
        ) as last_event_at,
        min(occurred_at) filter (where event_name = 'order_completed') as first_order_at,
        max(occurred_at) filter (where event_name = 'order_completed') as last_order_at,
        count(*) filter (where event_name = 'order_completed') as order_count,
        coalesce(sum(revenue) filter (where event_name = 'order_completed'), 0) as lifetime_revenue,
        {{ as_of() }} as computed_as_of
    from events
    group by customer_id

)

select * from final
