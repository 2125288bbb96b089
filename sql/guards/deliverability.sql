-- The deliverability guard: over the trailing window ($since, $until], how many emails this
-- provider accepted for nudge, and how many hard bounces and spam complaints it reported.
-- Read from nudge's own tables, not a dbt model, so the push sees the events the tick drained
-- a minute ago. Parameters: $provider, $since, $until.
with

sends as (

    select count(*) as sends
    from nudge.send_ledger
    where
        provider = $provider
        and status = 'sent'
        and coalesce(sending_at, settled_at) > $since
        and coalesce(sending_at, settled_at) <= $until

),

events as (

    select
        count(*) filter (
            where event_type = 'bounced' and bounce_type = 'hard'
        ) as hard_bounces,
        count(*) filter (where event_type = 'complained') as complaints
    from nudge.email_events
    where
        provider = $provider
        and occurred_at > $since
        and occurred_at <= $until

),

final as (

    select
        sends.sends,
        events.hard_bounces,
        events.complaints
    from sends
    cross join events

)

select * from final
