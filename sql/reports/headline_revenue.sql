-- Attributed revenue per trigger and currency (never summed across currencies).
select
    trigger,
    currency,
    sum(revenue) as revenue
from reporting.rpt_trigger_revenue_daily
group by trigger, currency
order by trigger, currency
