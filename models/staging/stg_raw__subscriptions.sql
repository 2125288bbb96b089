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
        -- A consent change dated after the tick has not happened yet for this tick.
        and changed_at <= {{ as_of() }}
        and lower(trim(status)) in ('subscribed', 'unsubscribed')

)

select * from final
