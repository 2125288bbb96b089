-- Attributed orders and revenue per day the emails went out, trigger, step, variant and
-- currency: never a sum across currencies. Orders attributed to a held-out step are not
-- email revenue and are left out (rpt_holdout_lift compares them).
with

attributed as (

    select * from {{ ref('int_orders__attributed') }}

),

sends as (

    select * from {{ ref('fct_sends') }}
    where status = 'sent'

),

final as (

    select
        sends.touched_on as sent_on,
        sends.trigger,
        sends.step,
        sends.variant,
        attributed.currency,
        count(*) as conversions,
        coalesce(sum(attributed.revenue), 0) as revenue
    from attributed
    inner join sends
        on attributed.send_id = sends.send_id
    group by
        sends.touched_on,
        sends.trigger,
        sends.step,
        sends.variant,
        attributed.currency

)

select * from final
