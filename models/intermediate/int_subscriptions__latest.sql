with

subscriptions as (

    select * from {{ ref('stg_raw__subscriptions') }}
    -- A consent change dated after the tick has not happened yet for this tick.
    where changed_at <= {{ as_of() }}

),

-- The latest change at as_of decides. On a tie the unsubscribe wins: when in doubt, don't mail.
final as (

    select
        customer_id,
        list,
        status,
        changed_at
    from subscriptions
    qualify
        row_number() over (
            partition by customer_id, list
            order by changed_at desc, (status = 'unsubscribed') desc
        ) = 1

)

select * from final
