-- Conversions and revenue per trigger and currency from the sends of [$date_from, $date_to].
-- One row per currency: amounts in different currencies are never added together.
select
    trigger,
    currency,
    cast(sum(conversions) as bigint) as conversions,
    sum(revenue) as revenue
from reporting.rpt_trigger_revenue_daily
where sent_on between $date_from and $date_to
group by trigger, currency
order by trigger, currency
