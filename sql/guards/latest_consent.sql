-- Consent re-check at push time: which customers of a batch have, as latest status on a
-- list, $status (unsubscribed on the marketing list, suppressed on the suppression list),
-- counting changes that landed after the tick's dbt build. The latest change per customer
-- wins; on a tie the unsubscribe wins, as in int_subscriptions__latest.
-- Parameters: $customer_ids, $list, $status, $cutoff. {subscriptions} is the staging view
-- (not as_of filtered).
with

changes as (

    select
        customer_id,
        status
    from {subscriptions}
    where
        list = $list
        and changed_at <= $cutoff
        and customer_id in (select unnest($customer_ids))
    qualify
        row_number() over (
            partition by customer_id
            order by changed_at desc, (status = 'unsubscribed') desc
        ) = 1

)

select customer_id from changes
where status = $status
