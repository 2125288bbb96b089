-- One row per send: every email the provider accepted and every step held out of a send on
-- purpose, with what the provider reported about it and the orders attributed to it (last
-- touch, int_orders__attributed). The table a BI tool starts from.
with

touches as (

    select * from {{ ref('int_sends__touches') }}

),

engagement as (

    select * from {{ ref('int_email_events__by_send') }}

),

attributed as (

    select * from {{ ref('int_orders__attributed') }}

),

-- One send rarely earns two orders, and then nearly always in one currency; when it is not,
-- the revenue stays null rather than a sum of two currencies.
conversions as (

    select
        send_id,
        count(*) as attributed_orders,
        {{ nudge_earliest('order_id', 'ordered_at', 'order_id') }} as attributed_order_id,
        min(ordered_at) as attributed_ordered_at,
        case when count(distinct currency) = 1 then sum(revenue) end as attributed_revenue,
        case when count(distinct currency) = 1 then min(currency) end as attributed_currency
    from attributed
    group by send_id

),

final as (

    select
        touches.send_id,
        touches.trigger,
        touches.step,
        touches.step_index,
        touches.variant,
        touches.category,
        touches.trigger_key,
        touches.customer_id,
        touches.status,
        touches.holdout_reason,
        touches.provider,
        touches.touched_at,
        cast(touches.touched_at as date) as touched_on,
        touches.send_time,
        engagement.first_delivered_at,
        engagement.first_opened_at,
        engagement.first_machine_opened_at,
        engagement.first_clicked_at,
        engagement.first_bounced_at,
        engagement.bounce_type,
        engagement.first_complained_at,
        engagement.first_unsubscribed_at,
        coalesce(conversions.attributed_orders, 0) as attributed_orders,
        conversions.attributed_order_id,
        conversions.attributed_ordered_at,
        conversions.attributed_revenue,
        conversions.attributed_currency
    from touches
    left join engagement
        on touches.send_id = engagement.send_id
    left join conversions
        on touches.send_id = conversions.send_id

)

select * from final
