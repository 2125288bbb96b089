-- Send-time optimization: per customer, the local hour at which they most often read (a
-- human open or a click the providers reported) or order, with at least
-- var send_time_min_signals such moments; fewer means no best hour (the step keeps its default
-- timing). Ties go to the earlier hour. Plain counting, so a marketer can check any customer's.
with

customers as (

    select * from {{ ref('stg_raw__customers') }}

),

ledger as (

    select * from {{ source('nudge', 'send_ledger') }}

),

engagement as (

    select * from {{ ref('stg_nudge__email_events') }}
    where
        occurred_at <= {{ as_of() }}
        and (event_type = 'clicked' or (event_type = 'opened' and not is_machine_open))

),

orders as (

    select * from {{ ref('int_orders__itemized') }}

),

signals as (

    select
        ledger.customer_id,
        engagement.occurred_at
    from engagement
    inner join ledger
        on engagement.send_id = ledger.send_id

    union all

    select
        customer_id,
        ordered_at as occurred_at
    from orders

),

hours as (

    select
        signals.customer_id,
        hour(timezone(customers.timezone, signals.occurred_at)) as local_hour,
        count(*) as signals
    from signals
    inner join customers
        on signals.customer_id = customers.customer_id
    group by all

),

ranked as (

    select
        *,
        sum(signals) over (partition by customer_id) as total_signals,
        row_number() over (
            partition by customer_id order by signals desc, local_hour asc
        ) as hour_rank
    from hours

),

final as (

    select
        customer_id,
        local_hour as best_send_hour,
        signals as best_hour_signals,
        total_signals
    from ranked
    where hour_rank = 1 and total_signals >= {{ var('send_time_min_signals') | int }}

)

select * from final
