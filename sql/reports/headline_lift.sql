select
    experiment,
    treatment_recipients,
    holdout_recipients,
    treatment_conversion_rate,
    holdout_conversion_rate,
    absolute_lift,
    absolute_lift_ci_low,
    absolute_lift_ci_high,
    p_value,
    verdict
from reporting.rpt_holdout_lift
order by experiment
