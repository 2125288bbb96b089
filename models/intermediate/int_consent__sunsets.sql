-- Sunsetting: a re_engagement entry whose last step went out, with no click on any email to
-- the customer from the entry's first email until var sunset_after_days after the last,
-- unsubscribes them from marketing at the end of that window (source `sunset`). Clicks only:
-- opens are too unreliable to keep someone on a list (machine opens, blocked images). Not
-- filtered by as_of: int_subscriptions__latest applies the tick, so a sunset whose window has
-- not ended yet is the future for this tick.

{%- if execute -%}
    {%- set steps = nudge_trigger_meta('re_engagement')['steps'] -%}
    {%- set last_step = steps[-1]['name'] -%}
{%- else -%}
    {%- set last_step = 'parse' -%}
{%- endif %}

with

ledger as (

    select * from {{ source('nudge', 'send_ledger') }}

),

events as (

    select * from {{ ref('stg_nudge__email_events') }}
    where event_type = 'clicked'

),

-- Each entry's sends: its first (the window for an answer opens there: a click on the first
-- email that arrives after the last call went out still counts) and its last step's.
entries as (

    select
        trigger_key,
        min(coalesce(sent_as_of, sending_at, settled_at)) as first_sent_at
    from ledger
    where trigger = 're_engagement' and status = 'sent'
    group by trigger_key

),

last_steps as (

    select
        ledger.trigger_key,
        ledger.customer_id,
        ledger.send_id,
        entries.first_sent_at,
        coalesce(ledger.sent_as_of, ledger.sending_at, ledger.settled_at) as sent_at
    from ledger
    inner join entries
        on ledger.trigger_key = entries.trigger_key
    where
        ledger.trigger = 're_engagement'
        and ledger.step = '{{ last_step }}'
        and ledger.status = 'sent'

),

clicks as (

    select
        ledger.customer_id,
        events.occurred_at
    from events
    inner join ledger
        on events.send_id = ledger.send_id

),

final as (

    select
        last_steps.customer_id,
        '{{ var("marketing_list") }}' as list,
        'unsubscribed' as status,
        last_steps.sent_at + interval '1 day' * {{ var('sunset_after_days') | int }} as changed_at,
        'sunset' as source,
        last_steps.send_id
    from last_steps
    where
        not exists (
            select 1 from clicks
            where
                clicks.customer_id = last_steps.customer_id
                and clicks.occurred_at >= last_steps.first_sent_at
                and clicks.occurred_at
                <= last_steps.sent_at + interval '1 day' * {{ var('sunset_after_days') | int }}
        )

)

select * from final
