-- nudge's own consent changes (the service's one-click unsubscribes, preference and confirm
-- pages), as drained into the warehouse. Not filtered by as_of, like stg_raw__subscriptions.
with

source as (

    select * from {{ source('nudge', 'consent_changes') }}

),

final as (

    select
        change_id,
        customer_id,
        lower(trim(list)) as list,
        lower(trim(status)) as status,
        changed_at,
        source,
        send_id
    from source

)

select * from final
