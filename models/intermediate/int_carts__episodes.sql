{{
    config(
        materialized='incremental',
        unique_key='cart_id',
        incremental_strategy='delete+insert',
        on_schema_change='fail',
        pre_hook="{{ nudge_recompute_changed('cart_id', owned_by=ref('int_carts__summarized')) }}",
    )
}}
-- depends_on: {{ ref('base_raw__events') }} (read by the pre-hook)
with

carts as (

    select * from {{ ref('int_carts__summarized') }}
    {% if is_incremental() -%}
        -- Incremental (macros/incremental.sql): only the carts whose events changed or whose
        -- owner's did (any order of theirs may convert the cart).
        where cart_id in (select cart_id from {{ nudge_changed_relation() }})
    {%- endif %}

),

events as (

    select * from {{ ref('stg_raw__events') }}
    {% if is_incremental() -%}
        -- Those carts' events, and their owners' orders.
        where
            cart_id in (select carts.cart_id from carts)
            or customer_id in (select carts.customer_id from carts)
    {%- endif %}

),

-- Only adding and removing products changes what the emails show, so only they start or move an
-- episode; a cart view or a checkout that goes nowhere does not. Events of another customer
-- under the same cart id are ignored: int_carts__summarized already picked the cart's owner.
modifications as (

    select
        events.cart_id,
        events.customer_id,
        events.event_id,
        events.occurred_at
    from events
    inner join carts
        on
            events.cart_id = carts.cart_id
            and events.customer_id = carts.customer_id
    where events.event_name in ('product_added', 'product_removed')

),

-- A modification long after the previous one (the sequence and its grace are over) opens a new
-- episode, i.e. a new sequence for the same cart. Closer modifications stay in the running
-- episode: they move its later steps but never resend a step already sent.
flagged_modifications as (

    select
        *,
        coalesce(
            occurred_at
            - lag(occurred_at) over (partition by cart_id order by occurred_at, event_id)
            > interval '1 hour' * {{ var('abandoned_cart_reentry_hours') }},
            true
        ) as starts_episode
    from modifications

),

numbered_modifications as (

    select
        *,
        sum(cast(starts_episode as integer)) over (
            partition by cart_id
            order by occurred_at, event_id
            rows between unbounded preceding and current row
        ) as episode
    from flagged_modifications

),

episodes as (

    select
        cart_id,
        episode,
        min(customer_id) as customer_id,
        min(occurred_at) as episode_started_at,
        max(occurred_at) as last_modified_at
    from numbered_modifications
    group by cart_id, episode

),

orders as (

    select
        customer_id,
        cart_id,
        occurred_at as ordered_at
    from events
    where event_name = 'order_completed'

),

cart_orders as (

    select * from orders
    where cart_id is not null

),

-- Converted: the cart itself was ordered during or after the episode, or the customer ordered
-- anything (through another cart, say) after the cart's last modification. An order before that
-- modification does not count: the customer came back and filled the cart again.
final as (

    select
        episodes.*,
        least(cart_orders.ordered_at, customer_orders.ordered_at) as ordered_at,
        {{ as_of() }} as computed_as_of
    from episodes
    {{ nudge_join_first_at('cart_orders', 'cart_orders', 'ordered_at', on='''
        episodes.cart_id = cart_orders.cart_id
        and episodes.episode_started_at <= cart_orders.ordered_at''') }}
    {{ nudge_join_first_at('orders', 'customer_orders', 'ordered_at', on='''
        episodes.customer_id = customer_orders.customer_id
        and episodes.last_modified_at < customer_orders.ordered_at''') }}

)

select * from final
