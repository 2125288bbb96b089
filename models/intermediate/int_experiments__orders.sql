-- The orders of each lift experiment's customers that count for it: placed within
-- var attribution_window_days after one of their touches in the experiment
-- (int_experiments__assignments), the end of the window included. Each order once per
-- experiment, however many touches it follows. rpt_holdout_lift counts the customers,
-- rpt_holdout_revenue sums the revenue per currency.
with

assignments as (

    select * from {{ ref('int_experiments__assignments') }}

),

orders as (

    select * from {{ ref('int_orders__itemized') }}

),

final as (

    select distinct
        assignments.experiment,
        assignments.arm,
        assignments.customer_id,
        orders.order_id,
        orders.revenue,
        orders.currency
    from assignments
    inner join orders
        on
            assignments.customer_id = orders.customer_id
            and assignments.touched_at < orders.ordered_at
            and orders.ordered_at
            <= assignments.touched_at
            + interval '1 day' * {{ var('attribution_window_days') | int }}

)

select * from final
