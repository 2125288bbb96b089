-- Deliverability per provider and UTC day in [$date_from, $date_to], with the limits the
-- deliverability guard holds marketing at.
select
    provider,
    sent_on,
    sent,
    delivered,
    hard_bounced,
    soft_bounced,
    complained,
    unsubscribed,
    opened,
    clicked,
    hard_bounce_rate,
    complaint_rate,
    open_rate,
    click_rate,
    complaint_rate_limit,
    hard_bounce_rate_limit,
    is_complaint_rate_over_limit,
    is_hard_bounce_rate_over_limit
from reporting.rpt_deliverability
where sent_on between $date_from and $date_to
order by sent_on, provider
