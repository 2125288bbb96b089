{#-
    The sequence engine: turns a trigger's entries into one row per (entry x step) around this
    tick, with when the step is due and why it is or is not sent now. A trigger model decides
    only *who entered and when*; its YAML (`config.meta.nudge` in models/triggers/<t>.yml)
    declares the steps, exit, re-entry, holdout and category; this macro applies them and every
    audience rule (email validity, suppression, consent, quiet hours, step order), once, for
    every trigger.

    Usage, in models/audience/<trigger>_eligibility.sql:
        {{ sequence_eligibility('<trigger>') }}

    Frequency caps are the one rule not decided here: they depend on what other triggers send in
    the same tick, so the send step applies them when it plans (sql/ledger/plan_decide.sql).

    A trigger model may also output a text column `entry_exclusion_reason`: null when the entry
    is fine, else why its data cannot make an email (abandoned_cart and post_purchase_review say
    `invalid_items` when every product has a price or quantity that is not a number). The entry
    is then excluded with that reason, right after invalid_email (data problems before consent
    and exits). A new reason must be added to exclusion_reason's accepted values in
    models/audience/_audience__models.yml. Every eligibility table has the column, null for
    triggers that do not output it.
-#}

{#- "90m", "24h", "3d" -> minutes. Python validates the same grammar at load time with an
    error naming the file and field (dagster_project/sequences.py); this is the backstop for a
    plain `dbt build`. -#}
{% macro nudge_minutes(value, field) -%}
    {%- set text = (value | string) | trim -%}
    {%- set units = {'m': 1, 'h': 60, 'd': 1440} -%}
    {%- set unit = text[-1:] -%}
    {%- set number = text[:-1] -%}
    {%- if unit not in units or not number.isdigit() -%}
        {{ exceptions.raise_compiler_error(field ~ " must look like 30m, 24h or 3d, got " ~ value) }}
    {%- endif -%}
    {{- (number | int) * units[unit] -}}
{%- endmacro %}

{#- The trigger's `config.meta.nudge`, read from the graph (available when dbt executes).
    A unit test runs without the graph: with `required=false` that gives none (the unit tests
    of the sequence engine override this macro with the YAML they test). -#}
{% macro nudge_trigger_meta(trigger, required=true) -%}
    {%- if not required and graph.get('nodes') is none -%}
        {{- return(none) -}}
    {%- endif -%}
    {%- set node = graph.nodes.get('model.' ~ project_name ~ '.' ~ trigger) -%}
    {%- if node is none -%}
        {{ exceptions.raise_compiler_error("no trigger model named " ~ trigger) }}
    {%- endif -%}
    {%- set meta = (node.config.meta or {}).get('nudge') or (node.meta or {}).get('nudge') -%}
    {%- if not meta or not meta.get('steps') -%}
        {{ exceptions.raise_compiler_error(
            "model " ~ trigger ~ " has no config.meta.nudge.steps in its YAML") }}
    {%- endif -%}
    {{- return(meta) -}}
{%- endmacro %}

{#- The instants between which an entry's steps can touch this tick's eligibility window: it
    entered after `after` (else its last step's grace ended before the lookback) and by `until`
    (else its first step is not due within the lookahead). The engine keeps exactly the steps
    inside that window (entry_steps below); a trigger model filters its entries on these bounds
    early, so an hourly tick builds the entries around it rather than every entry ever made
    (every birthday, lapse and order). Returns SQL expressions, from the trigger's YAML steps;
    none in a trigger model's unit test, which has no graph to read them from (no window then:
    the engine's own window is what decides, this only saves work). -#}
{% macro nudge_entry_bounds(trigger) -%}
    {%- set meta = nudge_trigger_meta(trigger, required=false) if execute else none -%}
    {%- if meta is none -%}
        {{- return(none) -}}
    {%- endif -%}
    {%- set steps = meta['steps'] -%}
    {%- set delays = [] -%}
    {%- set spans = [] -%}
    {%- for step in steps -%}
        {%- set delay = nudge_minutes(step.get('delay', '0h'), 'delay') | int -%}
        {%- set grace = nudge_minutes(step.get('grace', '24h'), 'grace') | int -%}
        {%- do delays.append(delay) -%}
        {%- do spans.append(delay + grace) -%}
    {%- endfor -%}
    {{- return({
        'after': '(' ~ as_of() ~ " - interval '1 day' * " ~ (var('eligibility_lookback_days') | int)
            ~ " - interval '1 minute' * " ~ (spans | max) ~ ')',
        'until': '(' ~ as_of() ~ " + interval '1 hour' * " ~ (var('eligibility_lookahead_hours') | int)
            ~ " - interval '1 minute' * " ~ (delays | min) ~ ')',
    }) -}}
{%- endmacro %}

{#- For entries at a local time of day on a date (birthdays, anniversaries: 09:00 local):
    whether `date_column` can give an entered_at within nudge_entry_bounds. Any local time of a
    date falls between 10:00 UTC the day before (UTC+14) and 12:00 UTC the day after (UTC-12),
    so the bounds' UTC dates, a day wider on each side, keep every entry that can; compared on
    dates, before any time zone conversion. True without bounds. -#}
{% macro nudge_entry_dates(trigger, date_column) -%}
    {%- set bounds = nudge_entry_bounds(trigger) -%}
    {%- if bounds is none -%}
        true
    {%- else -%}
        ({{ date_column }} >= cast(timezone('UTC', {{ bounds.after }}) as date) - 1
        and {{ date_column }} <= cast(timezone('UTC', {{ bounds.until }}) as date) + 1)
    {%- endif -%}
{%- endmacro %}

{#- Whether `column`, an entry's entered_at, lies within nudge_entry_bounds (true without
    bounds). -#}
{% macro nudge_entry_window(trigger, column) -%}
    {%- set bounds = nudge_entry_bounds(trigger) -%}
    {%- if bounds is none -%}
        true
    {%- else -%}
        ({{ column }} > {{ bounds.after }} and {{ column }} <= {{ bounds.until }})
    {%- endif -%}
{%- endmacro %}

{#- A stable bucket in [0, 10000) from a string: md5 so it never changes across DuckDB versions.
    Python mirrors it in dagster_project/sequences.py::bucket. -#}
{% macro nudge_bucket(expression) -%}
    ({{ nudge_hex_to_bigint('left(md5(' ~ expression ~ '), 8)') }} % 10000)
{%- endmacro %}

{#- Shift an instant out of the recipient's quiet hours: inside [start, end) local time it moves
    to the next local `end` o'clock. -#}
{% macro nudge_after_quiet_hours(instant, tz) -%}
    {%- set start = var('quiet_hours_start') | int -%}
    {%- set stop = var('quiet_hours_end') | int -%}
    case
        when cast(extract(hour from timezone({{ tz }}, {{ instant }})) as integer) >= {{ start }}
            then timezone(
                {{ tz }},
                date_trunc('day', timezone({{ tz }}, {{ instant }}))
                + interval '1 day' + interval '1 hour' * {{ stop }}
            )
        when cast(extract(hour from timezone({{ tz }}, {{ instant }})) as integer) < {{ stop }}
            then timezone(
                {{ tz }}, date_trunc('day', timezone({{ tz }}, {{ instant }})) + interval '1 hour' * {{ stop }}
            )
        else {{ instant }}
    end
{%- endmacro %}

{% macro sequence_eligibility(trigger) %}
{#- The marker Dagster reads from the manifest to pair this table with its trigger. -#}
{{ config(meta={'nudge_eligibility': {
    'trigger': trigger,
    'consent_list': var('marketing_list'),
    'suppression_list': var('suppression_list'),
    'quiet_hours': [var('quiet_hours_start') | int, var('quiet_hours_end') | int],
}}) }}
{%- if execute -%}
    {%- set meta = nudge_trigger_meta(trigger) -%}
{%- else -%}
    {%- set meta = {'steps': [{'name': 'parse', 'delay': '0h', 'grace': '1h'}]} -%}
{%- endif -%}
{%- set category = meta.get('category', 'marketing') -%}
{%- set steps = meta['steps'] -%}
{%- set reentry = meta.get('reentry', 'once_per_key') -%}
{%- set quiet = meta.get('quiet_hours', category == 'marketing') -%}
{%- set holdout_percent = meta.get('holdout_percent', 0) | float -%}
{%- set control_percent = (var('control_group_percent') | float) if category == 'marketing' else 0 -%}
{%- set exit_condition = meta.get('exit') -%}

with

-- The trigger model's rows, with entry_exclusion_reason and best_send_hour as null when the model
-- has no such column (macro nudge_trigger_entries).
entries as (

    {{ nudge_trigger_entries(trigger) }}

),

customers as (

    select * from {{ ref('stg_raw__customers') }}

),

consent as (

    select * from {{ ref('int_subscriptions__latest') }}
    where list = '{{ var("marketing_list") }}'

),

-- Hard bounces, complaints and erasures: no email of any category goes to them.
suppressed as (

    select
        customer_id,
        source
    from {{ ref('int_subscriptions__latest') }}
    where list = '{{ var("suppression_list") }}' and status = 'suppressed'

),

ledger as (

    select * from {{ source('nudge', 'send_ledger') }}
    where trigger = '{{ trigger }}'

),

-- What the provider reported about this trigger's sends up to the tick: which steps of each
-- entry a person opened (machine opens do not count) or clicked, for step conditions such as
-- "only if the reminder was not clicked".
engagement as (

    select
        trigger_key,
        {{ nudge_agg_list('step', 'step') }} filter (where is_opened) as opened_steps,
        {{ nudge_agg_list('step', 'step') }} filter (where is_clicked) as clicked_steps
    from {{ ref('int_email_events__by_send') }}
    where trigger = '{{ trigger }}'
    group by trigger_key

),

-- The sequence as a table: one row per step with its timing and the step before it.
steps as (

    select * from (
        values
        {%- for step in steps %}
            (
                {{ loop.index }},
                '{{ step["name"] }}',
                {{ nudge_minutes(step.get("delay", "0h"), "steps[" ~ loop.index0 ~ "].delay") }},
                {{ nudge_minutes(step.get("grace", "24h"), "steps[" ~ loop.index0 ~ "].grace") }},
                {%- if loop.first %}
                cast(null as varchar),
                cast(null as integer)
                {%- else %}
                '{{ loop.previtem["name"] }}',
                {{ nudge_minutes(loop.previtem.get("delay", "0h"), "delay") }}
                + {{ nudge_minutes(loop.previtem.get("grace", "24h"), "grace") }}
                {%- endif %}
            ){{ "," if not loop.last }}
        {%- endfor %}
    ) as steps (
        step_index, step, delay_minutes, grace_minutes, previous_step, previous_expiry_minutes
    )

),

-- Entries x steps, only where the step's window touches this tick: upcoming ones (lookahead)
-- and recently expired ones (lookback), so the table shows what is coming and what was missed.
entry_steps as (

    select
        entries.*,
        steps.step_index,
        steps.step,
        steps.previous_step,
        -- What re-entry is counted per: the customer unless the YAML says otherwise.
        ({{ meta.get('reentry_key') or 'entries.customer_id' }}) as reentry_key,
        {{ send_id("'" ~ trigger ~ "'", 'entries.trigger_key', 'steps.step') }} as send_id,
        case
            when steps.previous_step is not null
                then {{ send_id("'" ~ trigger ~ "'", 'entries.trigger_key', 'steps.previous_step') }}
        end as previous_send_id,
        entries.entered_at + interval '1 minute' * steps.delay_minutes as scheduled_at,
        entries.entered_at + interval '1 minute' * (steps.delay_minutes + steps.grace_minutes) as expires_at,
        entries.entered_at + interval '1 minute' * steps.previous_expiry_minutes as previous_expires_at
    from entries
    cross join steps
    where
        -- Implied by the two conditions below; on the entry alone, so it is applied first.
        {{ nudge_entry_window(trigger, 'entries.entered_at') }}
        and entries.entered_at + interval '1 minute' * steps.delay_minutes
        <= {{ as_of() }} + interval '1 hour' * {{ var('eligibility_lookahead_hours') }}
        and entries.entered_at + interval '1 minute' * (steps.delay_minutes + steps.grace_minutes)
        > {{ as_of() }} - interval '1 day' * {{ var('eligibility_lookback_days') }}

),

-- What this entry's steps did, for step order and for conditions on earlier sends.
entry_history as (

    select
        ledger.trigger_key,
        {{ nudge_agg_list('ledger.step', 'ledger.step') }} filter (
            where ledger.status = 'sent'
        ) as sent_steps,
        -- The first step still open (in flight, retrying, delivery unknown, deferred): no
        -- later step may go out, even once the steps between have expired unsent.
        min(steps.step_index) filter (
            where ledger.status in ('planned', 'sending', 'unknown', 'failed_retryable', 'deferred')
        ) as open_step_index,
        -- The furthest step the sequence has reached: handed to the provider or settled on
        -- purpose. A sequence only moves forward, so no step before it is ever sent, even when
        -- the entry's entered_at moves (an edited cart) and an earlier step falls due again.
        -- Indexes come from the YAML's step names, not the ledger's step_index, so rows written
        -- before step_index existed count too.
        max(steps.step_index) filter (
            where ledger.status in (
                'planned', 'sending', 'sent', 'unknown', 'failed_retryable', 'failed_permanent',
                'skipped', 'holdout'
            )
        ) as reached_step_index
    from ledger
    left join steps
        on ledger.step = steps.step
    group by ledger.trigger_key

),

-- Sequences this trigger already started for the same re-entry key (by default the customer).
started as (

    select
        coalesce(reentry_key, customer_id) as reentry_key,
        trigger_key,
        min(entered_at) as entered_at
    from ledger
    where status in ('planned', 'sending', 'sent', 'unknown', 'failed_retryable', 'holdout')
    group by coalesce(reentry_key, customer_id), trigger_key

),

joined as (

    select
        entry_steps.*,
        customers.customer_id is not null as is_known_customer,
        customers.email,
        coalesce(customers.is_valid_email, false) as is_valid_email,
        customers.first_name,
        coalesce(customers.timezone, '{{ var("default_timezone") }}') as timezone,
        suppressed.customer_id is not null as is_suppressed,
        -- erasure (nudge erase), or manual: the shop's own suppression list.
        case
            when suppressed.customer_id is null then null
            when suppressed.source = 'import' then 'manual'
            else coalesce(suppressed.source, 'manual')
        end as suppression_reason,
        consent.status as consent_status,
        consent.source as consent_source,
        this_step.status as ledger_status,
        previous_step.status as previous_step_status,
        coalesce(entry_history.sent_steps, {{ nudge_empty_list() }}) as sent_steps,
        coalesce(engagement.opened_steps, {{ nudge_empty_list() }}) as opened_steps,
        coalesce(engagement.clicked_steps, {{ nudge_empty_list() }}) as clicked_steps,
        entry_history.open_step_index,
        entry_history.reached_step_index
    from entry_steps
    left join customers
        on entry_steps.customer_id = customers.customer_id
    left join suppressed
        on entry_steps.customer_id = suppressed.customer_id
    left join consent
        on entry_steps.customer_id = consent.customer_id
    left join ledger as this_step
        on entry_steps.send_id = this_step.send_id
    left join ledger as previous_step
        on entry_steps.previous_send_id = previous_step.send_id
    left join entry_history
        on entry_steps.trigger_key = entry_history.trigger_key
    left join engagement
        on entry_steps.trigger_key = engagement.trigger_key

),

-- Send-time optimization: a step with `send_time: best_hour` goes out at the customer's best
-- local hour (int_customers__best_send_hour, which the trigger model passes as
-- best_send_hour) at or after its scheduled time, when that falls inside its grace window.
-- var send_time_holdout_percent of customers keep the default timing (default_holdout), so
-- rpt_holdout_lift measures the timing itself; customers without history keep it too.
timing as (

    select
        *,
        {%- set timed_steps = steps | selectattr('send_time', 'defined') | map(attribute='name') | list %}
        {%- if timed_steps %}
        case
            when step not in ('{{ timed_steps | join("', '") }}') then null
            when best_send_hour is null then 'default_no_history'
            when {{ nudge_bucket("'nudge_send_time:' || customer_id") }}
                < {{ (var('send_time_holdout_percent') | float * 100) | int }}
                then 'default_holdout'
            else 'best_hour'
        end as send_time,
        timezone(
            timezone,
            date_trunc('day', timezone(timezone, scheduled_at))
            + interval '1 hour' * best_send_hour
            + case
                when cast(extract(hour from timezone(timezone, scheduled_at)) as integer) > best_send_hour
                    or (
                        cast(extract(hour from timezone(timezone, scheduled_at)) as integer) = best_send_hour
                        and cast(extract(minute from timezone(timezone, scheduled_at)) as integer) > 0
                    )
                    then interval '1 day'
                else interval '0 day'
            end
        ) as best_hour_at
        {%- else %}
        cast(null as varchar) as send_time,
        cast(null as timestamptz) as best_hour_at
        {%- endif %}
    from joined

),

timed as (

    select
        *,
        case
            when send_time = 'best_hour' and best_hour_at < expires_at then best_hour_at
            else scheduled_at
        end as sends_at,
        {%- if quiet %}
        {{ nudge_after_quiet_hours(
            "case when send_time = 'best_hour' and best_hour_at < expires_at "
            ~ "then best_hour_at else scheduled_at end", 'timezone') }} as due_at,
        {%- else %}
        case
            when send_time = 'best_hour' and best_hour_at < expires_at then best_hour_at
            else scheduled_at
        end as due_at,
        {%- endif %}
        -- The step before is settled (sent, skipped, expired, failed for good, held out) or can
        -- no longer go out (its grace window is over without it ever being planned).
        (
            previous_step is null
            or coalesce(
                previous_step_status in (
                    'sent', 'skipped', 'expired', 'failed_permanent', 'holdout'
                ),
                previous_step_status is null and {{ as_of() }} > previous_expires_at
            )
        )
        and coalesce(open_step_index >= step_index, true) as is_previous_step_done,
        {%- if exit_condition %}
        coalesce(({{ exit_condition }}), false) as has_exited,
        {%- else %}
        false as has_exited,
        {%- endif %}
        {%- if steps | selectattr('condition', 'defined') | list %}
        case step
            {%- for step in steps if step.get('condition') %}
            when '{{ step["name"] }}' then coalesce(({{ step['condition'] }}), false)
            {%- endfor %}
            else true
        end as meets_condition,
        {%- else %}
        true as meets_condition,
        {%- endif %}
        {%- if reentry == 'never' %}
        exists (
            select 1 from started
            where
                started.reentry_key = timing.reentry_key
                and started.trigger_key != timing.trigger_key
        ) as is_reentry_blocked,
        {%- elif reentry is mapping and reentry.get('after_days') is not none %}
        exists (
            select 1 from started
            where
                started.reentry_key = timing.reentry_key
                and started.trigger_key != timing.trigger_key
                and started.entered_at <= timing.entered_at
                and started.entered_at
                > timing.entered_at - interval '1 day' * {{ reentry['after_days'] | int }}
        ) as is_reentry_blocked,
        {%- else %}
        false as is_reentry_blocked,
        {%- endif %}
        {{ nudge_bucket("'" ~ trigger ~ ":' || customer_id") }}
        < {{ (holdout_percent * 100) | int }} as is_holdout,
        {{ nudge_bucket("'nudge_control_group:' || customer_id") }}
        < {{ (control_percent * 100) | int }} as is_control_group,
        -- A/B: a deterministic draw per entry and step picks the variant and so the template.
        {%- if steps | selectattr('variants', 'defined') | list %}
        case step
            {%- for step in steps if step.get('variants') %}
            {%- set total = step['variants'] | sum(attribute='weight') %}
            {%- set ns = namespace(upper=0) %}
            when '{{ step["name"] }}' then case
                {%- for variant in step['variants'] %}
                {%- set ns.upper = ns.upper + variant['weight'] %}
                when {{ nudge_bucket("send_id") }} * {{ total }} < {{ ns.upper }} * 10000
                    then '{{ variant["name"] }}'
                {%- endfor %}
            end
            {%- endfor %}
        end as variant
        {%- else %}
        cast(null as varchar) as variant
        {%- endif %}
    from timing

),

ruled as (

    select
        *,
        case
            when not is_known_customer then 'unknown_customer'
            when not is_valid_email then 'invalid_email'
            -- The trigger's own verdict on the entry's data (e.g. invalid_items): before consent
            -- and before exits, so a cart left with only invalid items does not read `exited`.
            when entry_exclusion_reason is not null then entry_exclusion_reason
            when is_suppressed then 'suppressed'
            {%- if category == 'marketing' %}
            when consent_status is null then 'no_consent'
            -- Signed up, not confirmed yet (double opt-in): confirm_subscription asks them.
            when consent_status = 'pending' then 'unconfirmed'
            when consent_status != 'subscribed' then 'unsubscribed'
            {%- endif %}
            when has_exited then 'exited'
            when is_reentry_blocked then 'reentry_blocked'
            -- A later step of this entry was already reached: this one was skipped over.
            when coalesce(reached_step_index > step_index, false) then 'superseded'
            when {{ as_of() }} > expires_at then 'expired'
            when not is_previous_step_done then 'waiting_for_previous_step'
            when {{ as_of() }} < scheduled_at then 'not_due'
            -- Due, but waiting for the customer's best hour (send_time: best_hour).
            when {{ as_of() }} < sends_at then 'best_hour'
            {%- if quiet %}
            -- Not only a step scheduled at night: one that became sendable late (deferred by a
            -- cap, waiting for its previous step) must not go out at night either.
            when
                cast(extract(hour from timezone(timezone, {{ as_of() }})) as integer) >= {{ var('quiet_hours_start') | int }}
                or cast(extract(hour from timezone(timezone, {{ as_of() }})) as integer) < {{ var('quiet_hours_end') | int }}
                then 'quiet_hours'
            {%- endif %}
            when not meets_condition then 'condition_not_met'
            when is_control_group then 'control_group'
            when is_holdout then 'holdout'
        end as rule_exclusion_reason
    from timed

),

-- What the ledger knows comes first. A deferred send (frequency cap) is planned again by the
-- send step as soon as the cap allows, so it stays a candidate while the rules allow it.
reasoned as (

    select
        *,
        case
            when ledger_status = 'sent' then 'already_sent'
            when ledger_status = 'failed_permanent' then 'already_failed'
            when ledger_status = 'failed_retryable' then 'retrying'
            when ledger_status = 'unknown' then 'delivery_unknown'
            when ledger_status in ('planned', 'sending') then 'in_flight'
            when ledger_status in ('expired', 'skipped', 'holdout') then ledger_status
            else rule_exclusion_reason
        end as exclusion_reason
    from ruled

),

final as (

    select
        send_id,
        '{{ trigger }}' as trigger,
        trigger_key,
        step,
        step_index,
        variant,
        -- The template the step (or its variant) renders, as dagster_project/sequences.py
        -- names it: the YAML's `template`, else <trigger>/<step>[__<variant>].
        case
            {%- for step in steps %}
            {%- for variant in step.get('variants') or [] %}
            when step = '{{ step["name"] }}' and variant = '{{ variant["name"] }}'
                then '{{ variant.get("template") or trigger ~ "/" ~ step["name"] ~ "__" ~ variant["name"] }}'
            {%- else %}
            when step = '{{ step["name"] }}'
                then '{{ step.get("template") or trigger ~ "/" ~ step["name"] }}'
            {%- endfor %}
            {%- endfor %}
        end as template,
        '{{ category }}' as category,
        {{ meta.get('priority', 50) | int }} as priority,
        customer_id,
        reentry_key,
        email,
        first_name,
        timezone,
        entered_at,
        scheduled_at,
        due_at,
        expires_at,
        send_time,
        best_send_hour,
        exclusion_reason is null as is_eligible,
        exclusion_reason,
        rule_exclusion_reason,
        entry_exclusion_reason,
        consent_status,
        consent_source,
        suppression_reason,
        ledger_status,
        previous_step_status,
        sent_steps,
        opened_steps,
        clicked_steps,
        {{ nudge_trigger_columns(trigger, except=[
            'send_id', 'trigger_key', 'step', 'step_index', 'variant', 'customer_id',
            'reentry_key', 'email', 'first_name', 'timezone', 'entered_at', 'scheduled_at',
            'due_at', 'expires_at', 'exclusion_reason', 'rule_exclusion_reason',
            'entry_exclusion_reason', 'consent_status', 'consent_source', 'suppression_reason',
            'ledger_status', 'previous_step_status', 'sent_steps', 'opened_steps', 'clicked_steps',
            'previous_step', 'previous_send_id', 'previous_expires_at', 'open_step_index',
            'reached_step_index', 'sends_at', 'best_hour_at', 'send_time', 'best_send_hour',
            'is_known_customer', 'is_valid_email', 'is_suppressed', 'is_previous_step_done',
            'has_exited', 'meets_condition', 'is_reentry_blocked', 'is_holdout',
            'is_control_group',
        ]) }}
        {{ as_of() }} as as_of
    from reasoned

)

select * from final

{% endmacro %}

{#- The trigger model's rows (sequence_eligibility's entries), with entry_exclusion_reason and
    best_send_hour as null where the model has no such column. DuckDB decides when the query runs
    (`union all by name` with an empty row), so unit tests, which have no built relation to look
    at, need nothing more; elsewhere the built trigger model's columns decide. -#}
{% macro nudge_trigger_entries(trigger) -%}
    {{ return(adapter.dispatch('nudge_trigger_entries', 'nudge')(trigger)) }}
{%- endmacro %}

{% macro default__nudge_trigger_entries(trigger) -%}
    select * from {{ ref(trigger) }}
    union all by name
    select
        cast(null as varchar) as entry_exclusion_reason,
        cast(null as integer) as best_send_hour
    where false
{%- endmacro %}

{% macro postgres__nudge_trigger_entries(trigger) -%}
    {%- set columns = nudge_trigger_model_columns(trigger) -%}
    select
        *
        {%- if 'entry_exclusion_reason' not in columns %},
        cast(null as varchar) as entry_exclusion_reason
        {%- endif %}
        {%- if 'best_send_hour' not in columns %},
        cast(null as integer) as best_send_hour
        {%- endif %}
    from {{ ref(trigger) }}
{%- endmacro %}

{#- The trigger model's own columns that the eligibility table passes through (the templates'
    fields: cart items, order totals, ...), each followed by a comma: all but `except`. -#}
{% macro nudge_trigger_columns(trigger, except) -%}
    {{ return(adapter.dispatch('nudge_trigger_columns', 'nudge')(trigger, except)) }}
{%- endmacro %}

{% macro default__nudge_trigger_columns(trigger, except) -%}
    * exclude ({{ except | join(', ') }}),
{%- endmacro %}

{% macro postgres__nudge_trigger_columns(trigger, except) -%}
    {%- for column in nudge_trigger_model_columns(trigger) if column not in except %}
        {{ adapter.quote(column) }},
    {%- endfor %}
{%- endmacro %}

{#- A trigger model's column names as built, lowercase; none while dbt parses or before its
    first build. Looked up by name, not through ref(): in a unit test ref() names the fixture's
    CTE, which has the built model's columns but no relation to ask (and a unit test has no
    graph to look the model up in either). -#}
{% macro nudge_trigger_model_columns(name) -%}
    {%- if not execute -%}
        {{ return([]) }}
    {%- endif -%}
    {%- set relation = adapter.get_relation(
        database=target.database, schema=generate_schema_name('triggers', none), identifier=name
    ) -%}
    {%- if relation is none -%}
        {{ return([]) }}
    {%- endif -%}
    {{ return(adapter.get_columns_in_relation(relation) | map(attribute='name') | map('lower') | list) }}
{%- endmacro %}
