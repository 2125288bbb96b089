-- The last 7 days each provider sent on, newest first.
with

ranked as (

    select
        provider,
        sent_on,
        sent,
        hard_bounce_rate,
        complaint_rate,
        is_hard_bounce_rate_over_limit or is_complaint_rate_over_limit as is_over_limit,
        row_number() over (partition by provider order by sent_on desc) as recency
    from reporting.rpt_deliverability

),

final as (

    select
        provider,
        sent_on,
        sent,
        hard_bounce_rate,
        complaint_rate,
        is_over_limit
    from ranked
    where recency <= 7

)

select * from final
order by provider asc, sent_on desc
