-- Who was in which group of which lift experiment, and when each of their touches was: one row
-- per touch (int_sends__touches). Three kinds of experiment:
--   trigger_holdout  a trigger's recipients against the customers its holdout_percent held out;
--   control_group    every marketing recipient against the global control group;
--   send_time        <trigger>:send_time, a send_time best_hour step's recipients sent at their
--                    best hour against those kept at the default timing (default_holdout).
-- Only what holds someone out is an experiment. A customer found in both groups of one
-- experiment (its YAML changed) is left out of it, so each group is a clean sample.
with

touches as (

    select * from {{ ref('int_sends__touches') }}

),

assignments as (

    select
        trigger as experiment,
        'trigger_holdout' as experiment_type,
        customer_id,
        touched_at,
        case when status = 'sent' then 'treatment' else 'holdout' end as arm
    from touches
    where status = 'sent' or holdout_reason = 'holdout'

    union all

    select
        'control_group' as experiment,
        'control_group' as experiment_type,
        customer_id,
        touched_at,
        case when status = 'sent' then 'treatment' else 'holdout' end as arm
    from touches
    where category = 'marketing' and (status = 'sent' or holdout_reason = 'control_group')

    union all

    select
        trigger || ':send_time' as experiment,
        'send_time' as experiment_type,
        customer_id,
        touched_at,
        case when send_time = 'best_hour' then 'treatment' else 'holdout' end as arm
    from touches
    where status = 'sent' and send_time in ('best_hour', 'default_holdout')

),

experiments as (

    select experiment
    from assignments
    group by experiment
    having count(*) filter (where arm = 'holdout') > 0

),

single_arm as (

    select
        experiment,
        customer_id
    from assignments
    group by experiment, customer_id
    having count(distinct arm) = 1

),

final as (

    select assignments.*
    from assignments
    inner join experiments
        on assignments.experiment = experiments.experiment
    inner join single_arm
        on
            assignments.experiment = single_arm.experiment
            and assignments.customer_id = single_arm.customer_id

)

select * from final
