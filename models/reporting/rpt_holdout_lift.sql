-- Lift over the customers held out, per experiment (int_experiments__assignments): each
-- trigger with a holdout_percent, the global control group, and each send_time best_hour step
-- (its timing against the default). The unit is the customer: one converted when they ordered
-- within var attribution_window_days after any of their touches in the experiment (a send, or
-- a held-out step at the tick that recorded it), whatever other email they also got; so the
-- comparison does not depend on attribution_mode. Revenue, per currency: rpt_holdout_revenue.
with

assignments as (

    select * from {{ ref('int_experiments__assignments') }}

),

experiment_orders as (

    select * from {{ ref('int_experiments__orders') }}

),

experiments as (

    select distinct
        experiment,
        experiment_type
    from assignments

),

customers as (

    select distinct
        experiment,
        customer_id,
        arm
    from assignments

),

converted as (

    select distinct
        experiment,
        customer_id
    from experiment_orders

),

arms as (

    select
        customers.experiment,
        count(*) filter (where customers.arm = 'treatment') as treatment_recipients,
        count(*) filter (where customers.arm = 'holdout') as holdout_recipients,
        count(converted.customer_id) filter (where customers.arm = 'treatment')
            as treatment_conversions,
        count(converted.customer_id) filter (where customers.arm = 'holdout')
            as holdout_conversions
    from customers
    left join converted
        on
            customers.experiment = converted.experiment
            and customers.customer_id = converted.customer_id
    group by customers.experiment

),

rates as (

    select
        experiments.experiment_type,
        arms.*,
        cast(arms.treatment_conversions as double precision) / nullif(arms.treatment_recipients, 0)
            as treatment_conversion_rate,
        cast(arms.holdout_conversions as double precision) / nullif(arms.holdout_recipients, 0)
            as holdout_conversion_rate,
        cast(arms.treatment_conversions + arms.holdout_conversions as double precision)
        / nullif(arms.treatment_recipients + arms.holdout_recipients, 0) as pooled_rate
    from arms
    inner join experiments
        on arms.experiment = experiments.experiment

),

tested as (

    select
        *,
        treatment_conversion_rate - holdout_conversion_rate as absolute_lift,
        sqrt(
            treatment_conversion_rate * (1 - treatment_conversion_rate)
            / nullif(treatment_recipients, 0)
            + holdout_conversion_rate * (1 - holdout_conversion_rate)
            / nullif(holdout_recipients, 0)
        ) as lift_standard_error,
        -- Katz's log interval of the rate ratio; undefined with no conversion in a group.
        case
            when treatment_conversions > 0 and holdout_conversions > 0
                then sqrt(
                        1.0 / treatment_conversions - 1.0 / treatment_recipients
                        + 1.0 / holdout_conversions - 1.0 / holdout_recipients
                    )
        end as log_ratio_standard_error,
        {{ nudge_two_proportion_z(
            'treatment_conversions', 'treatment_recipients',
            'holdout_conversions', 'holdout_recipients') }} as z_score,
        -- The normal approximation needs enough people and enough of each outcome in both
        -- groups; below that the report says "too few to tell" instead of a verdict.
        coalesce(
            least(treatment_recipients, holdout_recipients)
            >= {{ var('lift_min_recipients') | int }}
            and least(treatment_recipients, holdout_recipients) * pooled_rate >= 5
            and least(treatment_recipients, holdout_recipients) * (1 - pooled_rate) >= 5,
            false
        ) as is_sample_sufficient
    from rates

),

final as (

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
        absolute_lift - {{ nudge_z95() }} * lift_standard_error as absolute_lift_ci_low,
        absolute_lift + {{ nudge_z95() }} * lift_standard_error as absolute_lift_ci_high,
        absolute_lift / nullif(holdout_conversion_rate, 0) as relative_lift,
        case
            when log_ratio_standard_error is not null
                then exp(
                        ln(treatment_conversion_rate / holdout_conversion_rate)
                        - {{ nudge_z95() }} * log_ratio_standard_error
                    ) - 1
        end as relative_lift_ci_low,
        case
            when log_ratio_standard_error is not null
                then exp(
                        ln(treatment_conversion_rate / holdout_conversion_rate)
                        + {{ nudge_z95() }} * log_ratio_standard_error
                    ) - 1
        end as relative_lift_ci_high,
        z_score,
        {{ nudge_two_sided_p_value('z_score') }} as p_value,
        absolute_lift * treatment_recipients as incremental_conversions,
        is_sample_sufficient,
        case
            when is_sample_sufficient
                then {{ nudge_two_sided_p_value('z_score') }} < 0.05
        end as is_significant,
        case
            when not is_sample_sufficient then 'insufficient_sample'
            when coalesce({{ nudge_two_sided_p_value('z_score') }} >= 0.05, true)
                then 'not_significant'
            when absolute_lift > 0 then 'positive'
            else 'negative'
        end as verdict
    from tested

)

select * from final
