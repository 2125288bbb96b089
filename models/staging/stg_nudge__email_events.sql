-- What the providers reported about nudge's sends, as drained into the warehouse. Not filtered
-- by as_of: the push-time re-check reads suppressions through int_consent__changes, and the
-- models that apply the tick filter on occurred_at themselves.
with

source as (

    select * from {{ source('nudge', 'email_events') }}

),

final as (

    select
        event_id,
        provider,
        provider_event_id,
        send_id,
        {{ normalize_email('email') }} as email,
        event_type,
        bounce_type,
        is_machine_open,
        url,
        occurred_at,
        received_at
    from source

)

select * from final
