-- Double opt-in: everyone whose latest marketing consent at as_of is `pending` (signed up,
-- not confirmed yet) gets a confirmation email at once and one reminder 48 h later. Once they
-- confirm (nudge serve records `subscribed`, source double_opt_in) or the shop records another
-- status, the entry is gone from this model and nothing more is sent.
with

consent as (

    select * from {{ ref('int_subscriptions__latest') }}
    where list = '{{ var("marketing_list") }}'

),

final as (

    select
        -- A new sign-up after a lapse is a new request: keyed by the pending change's instant.
        customer_id || ':' || cast(changed_at as varchar) as trigger_key,
        customer_id,
        changed_at as entered_at,
        list as consent_list
    from consent
    where status = 'pending'

)

select * from final
