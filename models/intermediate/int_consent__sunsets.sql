-- Sunsetting: a re_engagement entry whose last step went out, followed by no click on any
-- email to the customer within var sunset_after_days, unsubscribes them from marketing at the
-- end of that window (source `sunset`). A view, not filtered by as_of, like
-- int_consent__changes: int_subscriptions__latest applies the tick, so a sunset whose window
-- has not ended yet is the future for this tick.
{{ config(materialized='view') }}

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

last_steps as (

    select
        trigger_key,
        customer_id,
        send_id,
        coalesce(sending_at, settled_at) as sent_at
    from ledger
    where
        trigger = 're_engagement'
        and step = '{{ last_step }}'
        and status = 'sent'

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
        last_steps.sent_at + to_days({{ var('sunset_after_days') | int }}) as changed_at,
        'sunset' as source,
        last_steps.send_id
    from last_steps
    where
        not exists (
            select 1 from clicks
            where
                clicks.customer_id = last_steps.customer_id
                and clicks.occurred_at >= last_steps.sent_at
                and clicks.occurred_at
                <= last_steps.sent_at + to_days({{ var('sunset_after_days') | int }})
        )

)

select * from final
