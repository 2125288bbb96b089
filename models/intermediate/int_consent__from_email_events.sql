-- The consent changes the providers' events imply, as int_consent__changes merges them:
--   * a hard bounce or a spam complaint suppresses the address for every category
--     (suppression list, source `hard_bounce` / `complaint`);
--   * var soft_bounce_limit soft bounces in a row (undetermined ones count as soft) within
--     var soft_bounce_window_days, without a delivery between them, suppress it too
--     (source `soft_bounces`): an address that keeps bouncing hurts the sender's reputation;
--   * an unsubscribe the recipient made at the provider (its own link, a list-unsubscribe it
--     handled) unsubscribes them from marketing (source `provider:<name>`).
-- Bounces are about the address: they apply to every customer who has it now (one who moved
-- to another address since is not suppressed). A complaint or an unsubscribe is the person's
-- word: it applies to those customers and to the customer the send was for, whatever their
-- address now. Not filtered by as_of (int_subscriptions__latest applies the tick). A table,
-- built each tick after the drain: the push-time re-check reads it through
-- int_consent__changes and adds what landed since from the landing store (guards.py), so it
-- never recomputes these windows over every event for every batch.

with

events as (

    select * from {{ ref('stg_nudge__email_events') }}
    where event_type in ('bounced', 'complained', 'unsubscribed', 'delivered')

),

ledger as (

    select * from {{ source('nudge', 'send_ledger') }}

),

customers as (

    select * from {{ ref('stg_raw__customers') }}

),

addressed as (

    select
        events.event_id,
        events.provider,
        events.send_id,
        events.event_type,
        events.bounce_type,
        events.occurred_at,
        coalesce(events.email, ledger.email) as address,
        ledger.customer_id as send_customer_id
    from events
    left join ledger
        on events.send_id = ledger.send_id

),

-- Bounces that are not hard, numbered into runs: every delivery to the address starts a new
-- run, so only bounces "in a row" count together.
soft_bounces as (

    select
        address,
        send_customer_id,
        send_id,
        occurred_at,
        event_type,
        sum(case when event_type = 'delivered' then 1 else 0 end) over (
            partition by address
            order by occurred_at, event_type
            rows between unbounded preceding and current row
        ) as delivery_run
    from addressed
    where
        event_type = 'delivered'
        or (event_type = 'bounced' and coalesce(bounce_type, 'undetermined') != 'hard')

),

soft_bounce_counts as (

    select
        address,
        send_customer_id,
        send_id,
        occurred_at,
        count(*) over (
            partition by address, delivery_run
            order by occurred_at
            range between interval '{{ var("soft_bounce_window_days") }} days' preceding
            and current row
        ) as bounces_in_window
    from soft_bounces
    where event_type = 'bounced'

),

reasons as (

    select
        address,
        send_customer_id,
        send_id,
        occurred_at,
        '{{ var("suppression_list") }}' as list,
        'suppressed' as status,
        case event_type when 'complained' then 'complaint' else 'hard_bounce' end as source
    from addressed
    where
        event_type = 'complained'
        or (event_type = 'bounced' and bounce_type = 'hard')

    union all

    select
        address,
        send_customer_id,
        send_id,
        occurred_at,
        '{{ var("suppression_list") }}' as list,
        'suppressed' as status,
        'soft_bounces' as source
    from soft_bounce_counts
    where bounces_in_window >= {{ var('soft_bounce_limit') | int }}

    union all

    select
        address,
        send_customer_id,
        send_id,
        occurred_at,
        '{{ var("marketing_list") }}' as list,
        'unsubscribed' as status,
        'provider:' || provider as source
    from addressed
    where event_type = 'unsubscribed'

),

-- The address's customers now, and the one the send went to (its address may have changed
-- since, or the event may name none).
by_address as (

    select
        customers.customer_id,
        reasons.list,
        reasons.status,
        reasons.occurred_at as changed_at,
        reasons.source,
        reasons.send_id
    from reasons
    inner join customers
        on reasons.address = customers.email

    union

    select
        send_customer_id as customer_id,
        list,
        status,
        occurred_at as changed_at,
        source,
        send_id
    from reasons
    where
        send_customer_id is not null
        and source not in ('hard_bounce', 'soft_bounces')

),

final as (

    select
        customer_id,
        list,
        status,
        changed_at,
        source,
        send_id
    from by_address

)

select * from final
