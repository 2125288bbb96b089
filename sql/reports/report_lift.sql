-- Holdout lift per experiment (a trigger's holdout, or the global control group), over every
-- send up to the last tick: the model has no days, so the report's range does not apply.
-- The triggers' own holdouts first, then the global control group.
select
    experiment,
    experiment_type,
    treatment_recipients,
    holdout_recipients,
    treatment_conversions,
    holdout_conversions,
    treatment_conversion_rate,
    holdout_conversion_rate,
    absolute_lift,
    absolute_lift_ci_low,
    absolute_lift_ci_high,
    relative_lift,
    relative_lift_ci_low,
    relative_lift_ci_high,
    z_score,
    p_value,
    incremental_conversions,
    is_sample_sufficient,
    is_significant,
    verdict
from reporting.rpt_holdout_lift
order by experiment_type desc, experiment asc
