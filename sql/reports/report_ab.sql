-- A/B variants per trigger and step, over every send up to the last tick (no date range).
select
    trigger,
    step,
    variant,
    sent,
    clicked,
    click_rate,
    click_rate_ci_low,
    click_rate_ci_high,
    conversions,
    conversion_rate,
    conversion_rate_ci_low,
    conversion_rate_ci_high,
    is_sample_sufficient,
    is_click_winner,
    is_conversion_winner,
    verdict
from reporting.rpt_ab_results
order by trigger, step, variant
