with

changes as (

    select * from {{ ref('int_consent__changes') }}
    -- A consent change dated after the tick has not happened yet for this tick. An erasure
    -- is the exception: a tick replayed for an earlier instant must not mail an erased
    -- address either.
    where changed_at <= {{ as_of() }} or source = 'erasure'

),

-- The latest change at as_of decides. On a tie the unsubscribe wins: when in doubt, don't mail.
-- An erasure is final: no later change lifts it.
latest as (

    {{ nudge_first_per(
        'changes',
        'customer_id, list',
        "(source = 'erasure') desc nulls last, changed_at desc nulls last,"
        ~ " (status = 'unsubscribed') desc nulls last",
    ) }}

),

final as (

    select
        customer_id,
        list,
        status,
        changed_at,
        source
    from latest

)

select * from final
