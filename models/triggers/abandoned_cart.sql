with

carts as (

    select * from {{ ref('int_carts__summarized') }}

),

events as (

    select * from {{ ref('stg_raw__events') }}

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
            > to_hours({{ var('abandoned_cart_reentry_hours') }}),
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
        any_value(customer_id) as customer_id,
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
converted_episodes as (

    select
        episodes.*,
        least(cart_orders.ordered_at, customer_orders.ordered_at) as ordered_at
    from episodes
    asof left join cart_orders
        on
            episodes.cart_id = cart_orders.cart_id
            and episodes.episode_started_at <= cart_orders.ordered_at
    asof left join orders as customer_orders
        on
            episodes.customer_id = customer_orders.customer_id
            and episodes.last_modified_at < customer_orders.ordered_at

),

final as (

    select
        converted_episodes.cart_id || ':' || converted_episodes.episode as trigger_key,
        converted_episodes.customer_id,
        converted_episodes.last_modified_at as entered_at,
        converted_episodes.cart_id,
        converted_episodes.episode,
        converted_episodes.episode_started_at,
        converted_episodes.ordered_at,
        -- The cart as it is now, in every episode: an emptied cart exits even an older episode
        -- whose discount is still within its grace window.
        carts.items,
        carts.item_count,
        carts.cart_value,
        carts.currency,
        carts.invalid_item_count,
        -- Every product left in the cart has a price or quantity that is not a number: nothing
        -- can be shown, so the engine excludes the entry with this reason (before any exit,
        -- although item_count is 0).
        case
            when carts.invalid_item_count > 0 and carts.item_count = 0
                then 'invalid_items'
        end as entry_exclusion_reason,
        '{{ var("shop_url") }}/cart/'
        || {{ nudge_url_segment('converted_episodes.cart_id') }} as cart_url,
        -- A personal code per cart and episode, stable across ticks so every rerun renders the
        -- same email; the shop's checkout must accept CART- codes for discount_percent.
        'CART-'
        || upper(left(md5(converted_episodes.cart_id || ':' || converted_episodes.episode), 8))
            as discount_code,
        10 as discount_percent,
        '{{ var("shop_url") }}' as shop_url
    from converted_episodes
    inner join carts
        on converted_episodes.cart_id = carts.cart_id

)

select * from final
