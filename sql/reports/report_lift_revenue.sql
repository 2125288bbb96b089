-- Holdout revenue per experiment and currency, over every send up to the last tick.
select
    experiment,
    currency,
    treatment_revenue,
    holdout_revenue,
    treatment_revenue_per_recipient,
    holdout_revenue_per_recipient,
    incremental_revenue
from reporting.rpt_holdout_revenue
order by experiment, currency
