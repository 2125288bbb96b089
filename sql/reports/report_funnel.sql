-- The funnel per trigger and step over the sends of [$date_from, $date_to], summed over the
-- days and variants: sent, delivered, opened by a person (machine opens are not in opened),
-- clicked, converted. Sums cast to bigint: a sum is a hugeint on DuckDB, a numeric on
-- PostgreSQL.
with

steps as (

    select
        trigger,
        step,
        min(step_index) as step_index,
        cast(sum(sent) as bigint) as sent,
        cast(sum(delivered) as bigint) as delivered,
        cast(sum(opened) as bigint) as opened,
        cast(sum(clicked) as bigint) as clicked,
        cast(sum(conversions) as bigint) as conversions
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
        cast(conversions as double precision) / nullif(sent, 0) as conversion_rate
    from steps

)

select * from final
order by trigger, step_index, step
