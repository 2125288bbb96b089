select
    trigger,
    step,
    variant,
    sent,
    click_rate,
    conversion_rate,
    verdict
from reporting.rpt_ab_results
order by trigger, step, variant
