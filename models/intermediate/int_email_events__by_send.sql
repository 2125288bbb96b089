-- One row per send the provider accepted (ledger status `sent`) with what happened to it up to
-- the tick: the first delivered, opened, clicked, bounced, complained and unsubscribed instant.
-- Opens count humans only (Apple Mail Privacy Protection and provider machine-open flags
-- fetch every image without anyone reading), the machine ones are counted apart. The sequence
-- engine reads it for the entry's opened and clicked steps; re_engagement and the
-- deliverability model for who engages and what bounces.
with

ledger as (

    select * from {{ source('nudge', 'send_ledger') }}
    where status = 'sent'

),

events as (

    select * from {{ ref('stg_nudge__email_events') }}
    where occurred_at <= {{ as_of() }}

),

per_send as (

    select
        send_id,
        min(occurred_at) filter (where event_type = 'delivered') as first_delivered_at,
        min(occurred_at) filter (
            where event_type = 'opened' and not is_machine_open
        ) as first_opened_at,
        min(occurred_at) filter (
            where event_type = 'opened' and is_machine_open
        ) as first_machine_opened_at,
        min(occurred_at) filter (where event_type = 'clicked') as first_clicked_at,
        -- The latest sign that a person read it: re_engagement counts silence from here.
        max(occurred_at) filter (
            where event_type = 'clicked' or (event_type = 'opened' and not is_machine_open)
        ) as last_engaged_at,
        min(occurred_at) filter (where event_type = 'bounced') as first_bounced_at,
        -- A hard bounce decides, whatever soft bounces came before it.
        case
            when bool_or(event_type = 'bounced' and bounce_type = 'hard') then 'hard'
            when bool_or(event_type = 'bounced' and bounce_type = 'soft') then 'soft'
            when bool_or(event_type = 'bounced') then 'undetermined'
        end as bounce_type,
        min(occurred_at) filter (where event_type = 'complained') as first_complained_at,
        min(occurred_at) filter (where event_type = 'unsubscribed') as first_unsubscribed_at,
        count(*) filter (where event_type = 'opened' and not is_machine_open) as open_count,
        count(*) filter (where event_type = 'clicked') as click_count
    from events
    group by send_id

),

final as (

    select
        ledger.send_id,
        ledger.trigger,
        ledger.trigger_key,
        ledger.step,
        ledger.customer_id,
        ledger.provider,
        -- The tick's instant, not the wall clock: a replayed or simulated tick sent it then.
        coalesce(ledger.sent_as_of, ledger.sending_at, ledger.settled_at) as sent_at,
        per_send.first_delivered_at,
        per_send.first_opened_at,
        per_send.first_machine_opened_at,
        per_send.first_clicked_at,
        per_send.last_engaged_at,
        per_send.first_bounced_at,
        per_send.bounce_type,
        per_send.first_complained_at,
        per_send.first_unsubscribed_at,
        coalesce(per_send.open_count, 0) as open_count,
        coalesce(per_send.click_count, 0) as click_count,
        per_send.first_opened_at is not null as is_opened,
        per_send.first_clicked_at is not null as is_clicked
    from ledger
    left join per_send
        on ledger.send_id = per_send.send_id

)

select * from final
