-- Per day the emails went out, trigger, step and A/B variant: what was sent and what came of
-- it, as reported by the tick. Rates are of the emails sent. Revenue is in
-- rpt_trigger_revenue_daily, one row per currency, since amounts in two currencies never add.
with

sends as (

    select * from {{ ref('fct_sends') }}
    where status = 'sent'

),

daily as (

    select
        touched_on as sent_on,
        trigger,
        step,
        step_index,
        variant,
        category,
        count(*) as sent,
        count(first_delivered_at) as delivered,
        count(bounce_type) as bounced,
        count(*) filter (where bounce_type = 'hard') as hard_bounced,
        count(first_opened_at) as opened,
        -- Sends only machines opened (privacy proxies, scanners): never counted as read.
        count(*) filter (
            where first_machine_opened_at is not null and first_opened_at is null
        ) as machine_opened,
        count(first_clicked_at) as clicked,
        count(first_unsubscribed_at) as unsubscribed,
        count(first_complained_at) as complained,
        coalesce(sum(attributed_orders), 0) as conversions
    from sends
    group by touched_on, trigger, step, step_index, variant, category

),

final as (

    select
        *,
        cast(delivered as double precision) / sent as delivery_rate,
        cast(bounced as double precision) / sent as bounce_rate,
        cast(opened as double precision) / sent as open_rate,
        cast(clicked as double precision) / sent as click_rate,
        cast(unsubscribed as double precision) / sent as unsubscribe_rate,
        cast(complained as double precision) / sent as complaint_rate,
        cast(conversions as double precision) / sent as conversion_rate
    from daily

)

select * from final
