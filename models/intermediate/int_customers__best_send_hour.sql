-- Send-time optimization: per customer, the local hour at which they most often read (a
-- human open or a click the providers reported) or order. A moment is a day with such a sign
-- in that hour, so one email opened five times counts once. Only hours outside quiet hours
-- compete (a night reader's best hour would only be moved to the morning), and a customer
-- needs var send_time_min_signals moments in them; fewer means no best hour (the step keeps
-- its default timing). Ties go to the earlier hour. Plain counting, so a marketer can check
-- any customer's.
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

local_signals as (

    select
        signals.customer_id,
        timezone(customers.timezone, signals.occurred_at) as local_at
    from signals
    inner join customers
        on signals.customer_id = customers.customer_id

),

hours as (

    select
        customer_id,
        cast(extract(hour from local_at) as integer) as local_hour,
        count(distinct cast(local_at as date)) as signals
    from local_signals
    -- The engine's quiet hours, [quiet_hours_start, quiet_hours_end) across midnight.
    where
        cast(extract(hour from local_at) as integer) >= {{ var('quiet_hours_end') | int }}
        and cast(extract(hour from local_at) as integer) < {{ var('quiet_hours_start') | int }}
    group by customer_id, cast(extract(hour from local_at) as integer)

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
