-- Every consent change from every place it comes from, with its source: the shop's own
-- history (raw.subscriptions, source `import`), nudge's (the service, operators), the
-- providers' events (hard bounces, complaints, soft bounces in a row, unsubscribes at the
-- provider: int_consent__from_email_events), sunsets (int_consent__sunsets) and erasures (a
-- suppression on the suppression list for every customer whose address was erased, even if
-- the shop imports it again under a new id). A view, not filtered by as_of: the send step
-- re-reads it at push time (int_subscriptions__latest applies the tick).
{{ config(materialized='view') }}

with

imported as (

    select * from {{ ref('stg_raw__subscriptions') }}

),

recorded as (

    select * from {{ ref('stg_nudge__consent_changes') }}

),

from_email_events as (

    select * from {{ ref('int_consent__from_email_events') }}

),

sunsets as (

    select * from {{ ref('int_consent__sunsets') }}

),

customers as (

    select * from {{ ref('stg_raw__customers') }}

),

erasures as (

    select * from {{ source('nudge', 'erasures') }}

),

salt as (

    select * from {{ source('nudge', 'erasure_salt') }}

),

erased as (

    select
        customers.customer_id,
        erasures.erased_at
    from customers
    cross join salt
    inner join erasures
        on {{ erasure_hash('salt.salt', 'customers.email') }} = erasures.email_hash
    where customers.email is not null

),

final as (

    select
        customer_id,
        list,
        status,
        changed_at,
        'import' as source,
        cast(null as varchar) as send_id
    from imported

    union all

    select
        customer_id,
        list,
        status,
        changed_at,
        source,
        send_id
    from recorded

    union all

    select
        customer_id,
        list,
        status,
        changed_at,
        source,
        send_id
    from from_email_events

    union all

    select
        customer_id,
        list,
        status,
        changed_at,
        source,
        send_id
    from sunsets

    union all

    select
        customer_id,
        '{{ var("suppression_list") }}' as list,
        'suppressed' as status,
        erased_at as changed_at,
        'erasure' as source,
        cast(null as varchar) as send_id
    from erased

)

select * from final
