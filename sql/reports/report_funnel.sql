-- The funnel per trigger and step over the sends of [$date_from, $date_to], summed over the
-- days and variants: sent, delivered, opened by a person (machine opens are not in opened),
-- clicked, converted.
with

steps as (

    select
        trigger,
        step,
        min(step_index) as step_index,
        sum(sent) as sent,
        sum(delivered) as delivered,
        sum(opened) as opened,
        sum(clicked) as clicked,
        sum(conversions) as conversions
    from reporting.rpt_trigger_daily
    where sent_on between $date_from and $date_to
    group by trigger, step

),

final as (

    select
        trigger,
        step,
        step_index,
        sent,
        delivered,
        opened,
        clicked,
        conversions,
        conversions / nullif(sent, 0) as conversion_rate
    from steps

)

select * from final
order by trigger, step_index, step
