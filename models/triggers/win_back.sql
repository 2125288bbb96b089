with

activity as (

    select * from {{ ref('int_customers__activity') }}

),

best_hours as (

    select * from {{ ref('int_customers__best_send_hour') }}

),

-- Every customer who ever ordered is in a lapse that started at their latest event of any kind.
-- The lapse is named by that event, so any new activity replaces the entry with a new one whose
-- steps are months away: that is how the series exits when the customer comes back, and how a
-- customer who lapses again gets the series again.
lapses as (

    select
        *,
        customer_id
        || ':'
        || {{ nudge_utc_stamp('last_event_at') }} as lapse_key
    from activity
    where
        order_count > 0
        -- Only the lapses whose steps can touch this tick (nudge_entry_window, in
        -- macros/sequence.sql): the engine would drop the others.
        and {{ nudge_entry_window('win_back', 'last_event_at') }}

),

{{ nudge_product_picks_cte('select lapses.customer_id from lapses') }},

final as (

    select
        lapses.lapse_key as trigger_key,
        lapses.customer_id,
        lapses.last_event_at as entered_at,
        lapses.last_event_at,
        lapses.last_order_at,
        lapses.order_count,
        lapses.lifetime_revenue,
        -- Stable per lapse so every rerun renders the same code; the shop's checkout must accept
        -- BACK- codes for incentive_percent.
        'BACK-' || upper(left(md5(lapses.lapse_key), 8)) as incentive_code,
        15 as incentive_percent,
        coalesce(picks.recommended_products, {{ nudge_no_records() }}) as recommended_products,
        -- The steps say send_time: best_hour (the sequence engine reads it).
        best_hours.best_send_hour,
        '{{ var("shop_url") }}' as shop_url
    from lapses
    left join picks
        on lapses.customer_id = picks.customer_id
    left join best_hours
        on lapses.customer_id = best_hours.customer_id

)

select * from final
