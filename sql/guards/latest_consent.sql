-- Consent re-check at push time: the latest change on $list up to $cutoff of each customer of
-- a batch, counting changes that landed after the tick's dbt build ({subscriptions} is
-- int_consent__changes, not as_of filtered). Past the cutoff, a tick replayed for an earlier
-- instant (a simulation, a deliberate --allow-late catch-up) sees the shop's imported history
-- as it was then: what came later is its future. But a "no" nudge recorded itself (a click on
-- an unsubscribe link, an erasure, a bounce or complaint a provider reported) happened in real
-- time, before this email leaves: it counts, as of the cutoff. A sunset is not a "no" someone
-- gave: it is dated at the end of its window, which may be after the cutoff. The order is
-- int_subscriptions__latest's: an erasure first, then the latest change, the unsubscribe on a
-- tie. guards.py merges these with the landing store's
-- changes not drained yet, by the same rules.
-- Parameters: $customer_ids, $list, $cutoff.
with

changes as (

    select
        customer_id,
        status,
        least(changed_at, $cutoff) as changed_at,
        source
    from {subscriptions}
    where
        list = $list
        and (
            changed_at <= $cutoff
            or source = 'erasure'
            or (
                status in ('unsubscribed', 'suppressed')
                and source not in ('import', 'sunset')
            )
        )
        and customer_id in (select unnest(cast($customer_ids as varchar[])))

),

ranked as (

    select
        customer_id,
        status,
        changed_at,
        source,
        row_number() over (
            partition by customer_id
            order by
                (source = 'erasure') desc nulls last,
                changed_at desc nulls last,
                (status = 'unsubscribed') desc nulls last
        ) as recency
    from changes

),

final as (

    select
        customer_id,
        status,
        changed_at,
        source
    from ranked
    where recency = 1

)

select * from final
