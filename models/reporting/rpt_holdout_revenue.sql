-- Revenue of each lift experiment (rpt_holdout_lift) per currency: what the customers of each
-- group ordered within the window after their touches, per recipient, and the revenue the
-- emails added over the holdout's baseline. Same customers, windows and exclusions as the lift.
with

experiment_orders as (

    select * from {{ ref('int_experiments__orders') }}

),

lift as (

    select * from {{ ref('rpt_holdout_lift') }}

),

revenue as (

    select
        experiment,
        currency,
        coalesce(sum(revenue) filter (where arm = 'treatment'), 0) as treatment_revenue,
        coalesce(sum(revenue) filter (where arm = 'holdout'), 0) as holdout_revenue
    from experiment_orders
    group by experiment, currency

),

final as (

    select
        revenue.experiment,
        revenue.currency,
        revenue.treatment_revenue,
        revenue.holdout_revenue,
        revenue.treatment_revenue / nullif(lift.treatment_recipients, 0)
            as treatment_revenue_per_recipient,
        revenue.holdout_revenue / nullif(lift.holdout_recipients, 0)
            as holdout_revenue_per_recipient,
        (
            revenue.treatment_revenue / nullif(lift.treatment_recipients, 0)
            - revenue.holdout_revenue / nullif(lift.holdout_recipients, 0)
        ) * lift.treatment_recipients as incremental_revenue
    from revenue
    inner join lift
        on revenue.experiment = lift.experiment

)

select * from final
