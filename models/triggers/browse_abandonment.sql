with

browses as (

    select * from {{ ref('int_product_views__sessionized') }}

),

-- A browse during which the customer added the product or ordered was not abandoned. One that
-- converts after its last view stays, with added_at / ordered_at set, so the YAML's exit stops it.
final as (

    select
        customer_id
        || ':'
        || product_id
        || ':'
        || {{ nudge_utc_stamp('last_viewed_at') }} as trigger_key,
        customer_id,
        last_viewed_at as entered_at,
        product_id,
        coalesce(product_name, {{ nudge_truncate('product_id', 'max_product_name_chars') }})
            as product_name,
        price,
        coalesce(currency, 'USD') as currency,
        url,
        image_url,
        view_count,
        first_viewed_at,
        last_viewed_at,
        added_at,
        ordered_at,
        '{{ var("shop_url") }}' as shop_url
    from browses
    where
        (added_at is null or added_at > last_viewed_at)
        and (ordered_at is null or ordered_at > last_viewed_at)
        -- Only the browses whose step can touch this tick (nudge_entry_window, in
        -- macros/sequence.sql): the engine would drop the others.
        and {{ nudge_entry_window('browse_abandonment', 'last_viewed_at') }}

)

select * from final
