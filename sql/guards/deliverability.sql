-- The deliverability guard: over the trailing window ($since, $until] of real time, how many
-- emails this provider accepted for nudge, and how many of nudge's sends through it the
-- provider reported hard-bounced or complained about in the window. Only nudge's own sends
-- count, each once: a provider's webhook may report the shop's other mail too (SendGrid's is
-- account-wide), and one complaint may arrive as two events (Postmark's SpamComplaint and its
-- SubscriptionChange). Read from nudge's own tables, not a dbt model, so the push sees the
-- events the tick drained a minute ago. Parameters: $provider, $since, $until.
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
        count(distinct events.send_id) filter (
            where events.event_type = 'bounced' and events.bounce_type = 'hard'
        ) as hard_bounces,
        count(distinct events.send_id) filter (
            where events.event_type = 'complained'
        ) as complaints
    from nudge.email_events as events
    inner join nudge.send_ledger as ledger
        on events.send_id = ledger.send_id
    where
        ledger.provider = $provider
        and events.occurred_at > $since  -- noqa: RF02
        and events.occurred_at <= $until  -- noqa: RF02

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
