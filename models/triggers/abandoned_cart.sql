with

carts as (

    select * from {{ ref('int_carts__summarized') }}

),

episodes as (

    select * from {{ ref('int_carts__episodes') }}

),

final as (

    select
        episodes.cart_id || ':' || episodes.episode as trigger_key,
        episodes.customer_id,
        episodes.last_modified_at as entered_at,
        episodes.cart_id,
        episodes.episode,
        episodes.episode_started_at,
        episodes.ordered_at,
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
        || {{ nudge_url_segment('episodes.cart_id') }} as cart_url,
        -- A personal code per cart and episode, stable across ticks so every rerun renders the
        -- same email; the shop's checkout must accept CART- codes for discount_percent.
        'CART-'
        || upper(left(md5(episodes.cart_id || ':' || episodes.episode), 8))
            as discount_code,
        10 as discount_percent,
        '{{ var("shop_url") }}' as shop_url
    from episodes
    inner join carts
        on episodes.cart_id = carts.cart_id
    -- Only the episodes whose steps can touch this tick (nudge_entry_window, in
    -- macros/sequence.sql): the engine would drop the others.
    where {{ nudge_entry_window('abandoned_cart', 'episodes.last_modified_at') }}

)

select * from final
