-- Last-touch attribution: each order goes to the customer's latest touch (int_sends__touches)
-- within var attribution_window_days before it. A touch is a send the customer received, or in
-- var attribution_mode 'clicked' a send they clicked (at the click); a step held out of a send
-- counts in both modes from the tick that recorded it, so holdouts convert by the same rule.
-- An order is attributed at most once; ties go to the later send_id, so reruns agree.
with

touches as (

    select * from {{ ref('int_sends__touches') }}

),

orders as (

    select * from {{ ref('int_orders__itemized') }}

),

attributable as (

    select
        send_id,
        customer_id,
        {%- if var('attribution_mode') == 'clicked' %}
        case when status = 'sent' then first_clicked_at else touched_at end as touched_at
        {%- elif var('attribution_mode') == 'received' %}
            touched_at
        {%- else %}
        {{ exceptions.raise_compiler_error(
            "var attribution_mode must be 'received' or 'clicked', got "
            ~ var('attribution_mode')) }}
        {%- endif %}
    from touches

),

candidates as (

    select
        orders.order_id,
        orders.customer_id,
        orders.ordered_at,
        orders.revenue,
        orders.currency,
        attributable.send_id,
        attributable.touched_at
    from orders
    inner join attributable
        on
            orders.customer_id = attributable.customer_id
            and orders.ordered_at > attributable.touched_at
            and orders.ordered_at
            <= attributable.touched_at
            + interval '1 day' * {{ var('attribution_window_days') | int }}

),

final as (

    {{ nudge_first_per(
        'candidates', 'order_id', 'touched_at desc nulls last, send_id desc nulls last'
    ) }}

)

select * from final
