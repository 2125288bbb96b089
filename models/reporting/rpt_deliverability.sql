-- Deliverability per provider and day, for people: of the emails each provider accepted that
-- day, how many were delivered, bounced (hard, soft), complained about, opened and clicked,
-- as reported by as_of, and the rates against the limits the deliverability guard holds
-- marketing at (NUDGE_COMPLAINT_RATE_MAX, NUDGE_HARD_BOUNCE_RATE_MAX). The guard itself reads
-- a trailing 24 h window at push time (sql/guards/deliverability.sql); this is the history.
-- It reads fct_sends, as the other reports do, not int_email_events__by_send: the hourly tick
-- builds that before its push, so the last tick's sends would be missing here alone.
with

sends as (

    select * from {{ ref('fct_sends') }}
    where status = 'sent' and touched_at <= {{ as_of() }}

),

daily as (

    select
        provider,
        cast(touched_at as date) as sent_on,
        count(*) as sent,
        count(first_delivered_at) as delivered,
        count(*) filter (where bounce_type = 'hard') as hard_bounced,
        count(*) filter (where bounce_type in ('soft', 'undetermined')) as soft_bounced,
        count(first_complained_at) as complained,
        count(first_unsubscribed_at) as unsubscribed,
        count(first_opened_at) as opened,
        count(first_clicked_at) as clicked
    from sends
    group by provider, cast(touched_at as date)

),

final as (

    select
        provider,
        sent_on,
        sent,
        delivered,
        hard_bounced,
        soft_bounced,
        complained,
        unsubscribed,
        opened,
        clicked,
        cast(hard_bounced as double precision) / sent as hard_bounce_rate,
        cast(complained as double precision) / sent as complaint_rate,
        cast(opened as double precision) / sent as open_rate,
        cast(clicked as double precision) / sent as click_rate,
        {{ env_var('NUDGE_COMPLAINT_RATE_MAX', '0.003') | float }} as complaint_rate_limit,
        {{ env_var('NUDGE_HARD_BOUNCE_RATE_MAX', '0.05') | float }} as hard_bounce_rate_limit,
        cast(complained as double precision) / sent
        > {{ env_var('NUDGE_COMPLAINT_RATE_MAX', '0.003') | float }}
            as is_complaint_rate_over_limit,
        cast(hard_bounced as double precision) / sent
        > {{ env_var('NUDGE_HARD_BOUNCE_RATE_MAX', '0.05') | float }}
            as is_hard_bounce_rate_over_limit
    from daily

)

select * from final
