-- Subscribers who keep receiving marketing email and show no sign of reading it. Silence counts
-- from their latest human open or click of any marketing email (machine opens are no sign: Apple
-- Mail Privacy Protection opens everything), else from the first marketing email they got, and
-- never from before the provider's events began to arrive (before the webhooks were set up,
-- nobody's engagement is known: that is not silence). They enter after var
-- re_engagement_silent_days of it, once they have received var re_engagement_min_sends
-- marketing emails in it. The silence is the entry: an open or a click moves its start, which
-- replaces the entry with one whose steps are months away (that is how the series exits when
-- they engage). Those who stay silent after the last step are sunset (int_consent__sunsets).
-- When no event arrived for var re_engagement_feed_max_hours, a broken webhook would look like
-- everyone going silent: entries are excluded as engagement_data_stale until events flow again.
with

sends as (

    select * from {{ ref('int_email_events__by_send') }}
    where
        trigger in ({{ nudge_triggers_in_category('marketing') }})
        -- Its own emails do not count towards entering it again.
        and trigger != 're_engagement'
        and sent_at <= {{ as_of() }}

),

-- When the provider's events began and last arrived, as of the tick.
feed as (

    select
        min(occurred_at) as covered_since,
        max(occurred_at) as newest_event_at
    from {{ ref('stg_nudge__email_events') }}
    where occurred_at <= {{ as_of() }}

),

engagement as (

    select
        customer_id,
        max(last_engaged_at) as last_engaged_at,
        min(sent_at) as first_sent_at
    from sends
    group by customer_id

),

silences as (

    select
        engagement.customer_id,
        engagement.last_engaged_at,
        feed.newest_event_at,
        greatest(
            coalesce(engagement.last_engaged_at, engagement.first_sent_at), feed.covered_since
        ) as silent_since
    from engagement
    cross join feed
    where feed.covered_since is not null

),

counted as (

    select
        silences.customer_id,
        silences.last_engaged_at,
        silences.silent_since,
        silences.newest_event_at,
        count(sends.send_id) as sends_while_silent,
        -- The email that made the silence count: the series starts no earlier.
        {{ nudge_nth_smallest('sends.sent_at', var('re_engagement_min_sends') | int) }}
            as enough_sends_at
    from silences
    inner join sends
        on
            silences.customer_id = sends.customer_id
            and silences.silent_since <= sends.sent_at
    group by
        silences.customer_id,
        silences.last_engaged_at,
        silences.silent_since,
        silences.newest_event_at

),

final as (

    select
        customer_id
        || ':'
        || {{ nudge_utc_stamp('silent_since') }} as trigger_key,
        customer_id,
        greatest(
            silent_since + interval '1 day' * {{ var('re_engagement_silent_days') | int }},
            enough_sends_at
        ) as entered_at,
        silent_since,
        last_engaged_at,
        sends_while_silent,
        case
            when
                newest_event_at
                < {{ as_of() }}
                - interval '1 hour' * {{ var('re_engagement_feed_max_hours') | int }}
                then 'engagement_data_stale'
        end as entry_exclusion_reason,
        '{{ var("shop_url") }}' as shop_url
    from counted
    where sends_while_silent >= {{ var('re_engagement_min_sends') | int }}

)

select * from final
