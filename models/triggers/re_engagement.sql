-- Subscribers who keep receiving marketing email and show no sign of reading it. Silence counts
-- from their latest human open or click of any marketing email (machine opens are no sign: Apple
-- Mail Privacy Protection opens everything), else from the first marketing email they got.
-- After var re_engagement_silent_days of it, with at least var re_engagement_min_sends
-- marketing emails received in that silence, they enter. The silence is the entry: an open or
-- a click moves its start, which replaces the entry with one whose steps are months away (that
-- is how the series exits when they engage). Those who stay silent after the last step are
-- sunset (int_consent__sunsets).
with

sends as (

    select * from {{ ref('int_email_events__by_send') }}
    where
        trigger in ({{ nudge_triggers_in_category('marketing') }})
        -- Its own emails do not count towards entering it again.
        and trigger != 're_engagement'
        and sent_at <= {{ as_of() }}

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
        customer_id,
        last_engaged_at,
        coalesce(last_engaged_at, first_sent_at) as silent_since
    from engagement

),

counted as (

    select
        silences.customer_id,
        silences.last_engaged_at,
        silences.silent_since,
        count(sends.send_id) as sends_while_silent
    from silences
    inner join sends
        on
            silences.customer_id = sends.customer_id
            and silences.silent_since <= sends.sent_at
    group by all

),

final as (

    select
        customer_id
        || ':'
        || strftime(silent_since at time zone 'UTC', '%Y%m%dT%H%M%S') as trigger_key,
        customer_id,
        silent_since + to_days({{ var('re_engagement_silent_days') | int }}) as entered_at,
        silent_since,
        last_engaged_at,
        sends_while_silent,
        '{{ var("shop_url") }}' as shop_url
    from counted
    where sends_while_silent >= {{ var('re_engagement_min_sends') | int }}

)

select * from final
