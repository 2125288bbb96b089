-- The shop's own consent history. Not filtered by as_of: int_consent__changes merges it with
-- nudge's own changes, and the send step re-checks consent at push time against that view, so
-- it must see unsubscribes that landed after the tick's dbt build (int_subscriptions__latest
-- applies as_of).
with

source as (

    select * from {{ source('raw', 'subscriptions') }}

),

final as (

    select
        cast(customer_id as varchar) as customer_id,
        lower(trim(list)) as list,
        lower(trim(status)) as status,
        cast(changed_at as timestamptz) as changed_at
    from source
    where
        customer_id is not null
        and list is not null
        and changed_at is not null
        and lower(trim(status)) in ('subscribed', 'unsubscribed', 'pending', 'suppressed')

)

select * from final
