with

activity as (

    select * from {{ ref('int_customers__activity') }}

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
        || strftime(last_event_at at time zone 'UTC', '%Y%m%dT%H%M%S') as lapse_key
    from activity
    where order_count > 0

),

final as (

    select
        lapse_key as trigger_key,
        customer_id,
        last_event_at as entered_at,
        last_event_at,
        last_order_at,
        order_count,
        lifetime_revenue,
        -- Stable per lapse so every rerun renders the same code; the shop's checkout must accept
        -- BACK- codes for incentive_percent.
        'BACK-' || upper(left(md5(lapse_key), 8)) as incentive_code,
        15 as incentive_percent,
        '{{ var("shop_url") }}' as shop_url
    from lapses

)

select * from final
