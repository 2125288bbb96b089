-- Every moment nudge touched a customer, or deliberately did not: one row per send the provider
-- accepted (touched at the tick that sent it) and per step held out of a send to measure lift
-- (a trigger's holdout, or the global control group: touched at the tick that recorded it).
-- Treatment and holdout rows are timed alike, so an order's window counts from the same kind
-- of instant in both groups. Conversion attribution and the lift reports start here.
with

ledger as (

    select * from {{ source('nudge', 'send_ledger') }}
    where status in ('sent', 'holdout')

),

engagement as (

    select * from {{ ref('int_email_events__by_send') }}

),

touches as (

    select
        ledger.send_id,
        ledger.trigger,
        ledger.trigger_key,
        ledger.step,
        ledger.step_index,
        ledger.variant,
        coalesce(ledger.category, 'marketing') as category,
        ledger.customer_id,
        ledger.status,
        case when ledger.status = 'holdout' then coalesce(ledger.reason, 'holdout') end
            as holdout_reason,
        case when ledger.status = 'sent' then ledger.provider end as provider,
        -- The tick's instant, not the wall clock: a replayed tick sent (or held out) then.
        case
            when ledger.status = 'sent'
                then coalesce(ledger.sent_as_of, ledger.sending_at, ledger.settled_at)
            else ledger.as_of
        end as touched_at,
        -- How a send_time: best_hour step was timed (best_hour, default_holdout, ...).
        ledger.context ->> 'send_time' as send_time,
        engagement.first_clicked_at
    from ledger
    left join engagement
        on ledger.send_id = engagement.send_id

),

final as (

    select * from touches
    where touched_at <= {{ as_of() }}

)

select * from final
