{#-
    The shared half of every trigger: turns a trigger's entries into this tick's candidates with
    `is_eligible` and one `exclusion_reason`. A trigger model only decides *who entered and when
    the email is due*; consent, email validity, timing windows and the ledger are decided here,
    once, for every trigger.

    Usage, in models/audience/<trigger>_eligibility.sql:
        {{ eligibility('<trigger>_entries', trigger='<trigger>', step='<step>') }}
    Add `category='transactional'` for mail that ignores marketing consent, and
    `fires_on_absence=true` for triggers that fire on missing activity (see below).

    Entries must have: trigger, trigger_key, customer_id, entered_at, due_at, expires_at; any
    other column is passed through as personalization for the templates.

    `rule_exclusion_reason` is what the rules alone say, in this order: unknown_customer,
    invalid_email, no_consent / unsubscribed (marketing only), not_due, expired. The send step
    uses it to re-check sends it resumes from an earlier run.
    `exclusion_reason` puts what the ledger knows first (already_sent, already_failed, retrying,
    delivery_unknown, in_flight, expired, skipped), then the rule reason.
-#}
{% macro eligibility(entries_model, trigger, step, category='marketing', fires_on_absence=false) %}
{#- This call is the trigger's one declaration: it also writes `config.meta.nudge`, which
    Dagster reads from the manifest to create the trigger's send asset.
    `fires_on_absence`: the trigger fires because something did *not* happen (no order, no
    visit), so stale event data would make it fire wrongly; the send step holds it when the
    newest event is too old (the source freshness guard). -#}
{{ config(meta={'nudge': {
    'trigger': trigger,
    'step': step,
    'category': category,
    'fires_on_absence': fires_on_absence,
    'consent_list': var('marketing_list'),
}}) }}

with

entries as (

    select * from {{ ref(entries_model) }}

),

customers as (

    select * from {{ ref('stg_raw__customers') }}

),

consent as (

    select * from {{ ref('int_subscriptions__latest') }}
    where list = '{{ var("marketing_list") }}'

),

ledger as (

    select
        send_id,
        status
    from {{ source('nudge', 'send_ledger') }}

),

-- Only entries whose window touches this tick: upcoming ones (lookahead) and recently expired
-- ones (lookback), so the table shows what is coming and what was missed without all history.
candidates as (

    select
        *,
        '{{ step }}' as step,
        {{ send_id('trigger', 'trigger_key', "'" ~ step ~ "'") }} as send_id
    from entries
    where
        due_at <= {{ as_of() }} + to_hours({{ var('eligibility_lookahead_hours') }})
        and expires_at > {{ as_of() }} - to_days({{ var('eligibility_lookback_days') }})

),

joined as (

    select
        candidates.*,
        customers.customer_id is not null as is_known_customer,
        customers.email,
        coalesce(customers.is_valid_email, false) as is_valid_email,
        customers.first_name,
        customers.timezone,
        consent.status as consent_status,
        ledger.status as ledger_status
    from candidates
    left join customers
        on candidates.customer_id = customers.customer_id
    left join consent
        on candidates.customer_id = consent.customer_id
    left join ledger
        on candidates.send_id = ledger.send_id

),

ruled as (

    select
        *,
        case
            when not is_known_customer then 'unknown_customer'
            when not is_valid_email then 'invalid_email'
            {%- if category == 'marketing' %}
            when consent_status is null then 'no_consent'
            when consent_status != 'subscribed' then 'unsubscribed'
            {%- endif %}
            when due_at > {{ as_of() }} then 'not_due'
            when {{ as_of() }} > expires_at then 'expired'
        end as rule_exclusion_reason
    from joined

),

reasoned as (

    select
        *,
        case
            when ledger_status = 'sent' then 'already_sent'
            when ledger_status = 'failed_permanent' then 'already_failed'
            when ledger_status = 'failed_retryable' then 'retrying'
            when ledger_status = 'unknown' then 'delivery_unknown'
            when ledger_status in ('planned', 'sending') then 'in_flight'
            when ledger_status in ('expired', 'skipped') then ledger_status
            else rule_exclusion_reason
        end as exclusion_reason
    from ruled

),

final as (

    select
        send_id,
        trigger,
        trigger_key,
        step,
        '{{ category }}' as category,
        customer_id,
        email,
        first_name,
        timezone,
        entered_at,
        due_at,
        expires_at,
        exclusion_reason is null as is_eligible,
        exclusion_reason,
        rule_exclusion_reason,
        consent_status,
        ledger_status,
        {{ as_of() }} as as_of,
        * exclude (
            send_id, trigger, trigger_key, step, customer_id, email, first_name, timezone,
            entered_at, due_at, expires_at, exclusion_reason, rule_exclusion_reason,
            consent_status, ledger_status, is_known_customer, is_valid_email
        )
    from reasoned

)

select * from final

{% endmacro %}
